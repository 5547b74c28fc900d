// The streaming family's ceiling reference: a relay that moves a response body without copying
// it through user space. splice(2) takes the upstream socket's pages into a pipe and gives them
// to the client socket, through bun:ffi, so its kernel cost is the TCP work alone and its user
// cost nearly nil. No HTTP: the request goes up verbatim, and the answer comes back until the
// homeserver closes (bench requests say Connection: close). What a relay with copies (the proxy,
// nginx) loses to it is copying; what it loses to direct is the third process on the cores.
//
// Not a design for the proxy: the loop blocks this process's event loop for a whole transfer, so
// it serves one at a time, and the proxy could not hand a socket's descriptor to such a loop
// without racing its own event loop for that descriptor (a descriptor closed and reused by a new
// connection meanwhile would leak one user's bytes into another's). Linux only.
// Usage: bun splice-relay.ts UPSTREAM_PORT   (prints "splice relay listening PORT")
import { dlopen, FFIType, ptr } from "bun:ffi";

const upstreamPort = Number(process.argv[2]);
const { symbols: libc } = dlopen("libc.so.6", {
  splice: {
    args: [FFIType.i32, FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.u64, FFIType.u32],
    returns: FFIType.i64,
  },
  pipe: { args: [FFIType.ptr], returns: FFIType.i32 },
  fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
});
const F_GETFL = 3,
  F_SETFL = 4,
  O_NONBLOCK = 0o4000,
  F_SETPIPE_SZ = 1031,
  SPLICE_F_MOVE = 1;
const PIPE_BYTES = 1 << 20;

const pipe = new Int32Array(2);
if (libc.pipe(ptr(pipe)) !== 0) throw new Error("splice relay: pipe() failed");
const [pipeOut, pipeIn] = [pipe[0]!, pipe[1]!];
libc.fcntl(pipeIn, F_SETPIPE_SZ, PIPE_BYTES); // fewer, larger moves; the default is 64 KiB

// Bun's sockets carry their descriptor as `fd`; bun-types does not declare it.
const fdOf = (socket: object): number => (socket as { fd: number }).fd;

function blocking(fd: number): void {
  libc.fcntl(fd, F_SETFL, libc.fcntl(fd, F_GETFL, 0) & ~O_NONBLOCK);
}

/** Moves everything `from` sends until it closes; false if either side failed. */
function spliceUntilClose(from: number, to: number): boolean {
  for (;;) {
    let n = Number(libc.splice(from, null, pipeIn, null, PIPE_BYTES, SPLICE_F_MOVE));
    if (n === 0) return true;
    if (n < 0) return false;
    while (n > 0) {
      const m = Number(libc.splice(pipeOut, null, to, null, n, SPLICE_F_MOVE));
      if (m <= 0) return false;
      n -= m;
    }
  }
}

const server = Bun.listen({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    data(client, request) {
      // A bench request's head arrives in one read.
      void Bun.connect({
        hostname: "127.0.0.1",
        port: upstreamPort,
        socket: {
          open(up) {
            up.write(request);
            up.pause(); // from here on the socket is read by splice alone
            blocking(fdOf(up));
            blocking(fdOf(client));
            if (!spliceUntilClose(fdOf(up), fdOf(client))) {
              // The pipe may hold the failed transfer's bytes, which the next one would get.
              console.error("splice relay: a transfer failed; stopping");
              process.exit(1);
            }
            client.end();
            up.terminate();
          },
          data() {},
          error: () => client.terminate(),
        },
      }).catch(() => client.terminate());
    },
    error: () => {},
  },
});
console.log(`splice relay listening ${server.port}`);
