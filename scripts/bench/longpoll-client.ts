// Holds N /sync long-polls open against the proxy, one raw keep-alive socket each (node:net,
// so a socket costs a file descriptor and nothing else). Run as its own process with a raised
// open-files limit. Usage: bun longpoll-client.ts PORT N TIMEOUT_MS [SOURCES]
// SOURCES (default 1): the sockets come from 127.0.0.1 … 127.0.0.SOURCES in turn. One source
// address can hold at most one connection per ephemeral port to the same destination (about
// 28,000 with Linux's default ip_local_port_range), so 100,000 polls need at least four.
// stdin: "status ID" prints a status line tagged ID; "quit" closes every socket and exits.
import net from "node:net";
import { createInterface } from "node:readline";

const [port, n, timeoutMs, sources = 1] = process.argv.slice(2).map(Number) as [number, number, number, number?];
const BATCH = 250; // a burst of 10,000 SYNs would overflow the listen backlog
const sockets: net.Socket[] = [];
let connected = 0;
let answered = 0; // sockets that received any byte: a long-poll answered early (or an error)
let closed = 0;
let errors = 0;
let firstAnswer = "";

function open(i: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: "127.0.0.1", localAddress: `127.0.0.${1 + (i % sources)}` });
    sockets.push(s);
    let gotData = false;
    s.once("connect", () => {
      connected++;
      // A distinct user and device per poll, as 10,000 clients would be.
      s.write(
        `GET /_matrix/client/v3/sync?since=s1&timeout=${timeoutMs} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer lp${i}\r\n\r\n`,
        () => resolve(),
      );
    });
    s.on("data", (d: Buffer) => {
      if (!gotData) {
        gotData = true;
        answered++;
        firstAnswer ||= d.toString("latin1").split("\r\n")[0] ?? "";
      }
    });
    s.on("error", () => {
      errors++;
      resolve();
    });
    s.on("close", () => closed++);
  });
}

const status = (id: string) =>
  `status ${id} connected=${connected} answered=${answered} closed=${closed} errors=${errors} first=${JSON.stringify(firstAnswer)}`;

for (let i = 0; i < n; i += BATCH) {
  await Promise.all(Array.from({ length: Math.min(BATCH, n - i) }, (_, j) => open(i + j)));
}
console.log(`opened ${connected} ${errors}`);

createInterface({ input: process.stdin }).on("line", (line) => {
  if (line.startsWith("status ")) console.log(status(line.slice(7)));
  if (line === "quit") {
    for (const s of sockets) s.destroy();
    console.log(status("final"));
    process.exit(0);
  }
});
