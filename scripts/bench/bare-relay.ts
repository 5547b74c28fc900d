// The pass-through family's floor reference: the least a Bun relay can do per request. Each
// client connection is piped to its own upstream connection, bytes as they come: no HTTP, no
// pool, no headers, no log. What the proxy spends above this is its own. Small messages only:
// it ignores partial writes.
// Usage: bun bare-relay.ts UPSTREAM_PORT   (prints "bare relay listening PORT")
import type { Socket } from "bun";

const upstreamPort = Number(process.argv[2]);
interface Side {
  peer?: Socket<Side>;
  early: Buffer[];
}

const server = Bun.listen<Side>({
  hostname: "127.0.0.1",
  port: 0,
  socket: {
    open(client) {
      client.data = { early: [] };
      void Bun.connect<Side>({
        hostname: "127.0.0.1",
        port: upstreamPort,
        data: { peer: client, early: [] },
        socket: {
          open(up) {
            client.data.peer = up;
            for (const b of client.data.early) up.write(b);
            client.data.early = [];
          },
          data: (up, b) => void up.data.peer?.write(b),
          close: (up) => void up.data.peer?.end(),
          error: () => {},
        },
      }).catch(() => client.end());
    },
    data(client, b) {
      if (client.data.peer) client.data.peer.write(b);
      else client.data.early.push(b);
    },
    close: (client) => void client.data.peer?.end(),
    error: () => {},
  },
});
console.log(`bare relay listening ${server.port}`);
