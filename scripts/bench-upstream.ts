// A fast local upstream for benchmarks: small JSON, and a large streamed body. Run under Bun.
const small = JSON.stringify({ versions: ["v1.11"], unstable_features: { "org.example": true } });
const chunk = new Uint8Array(64 * 1024).fill(0x61);
const server = Bun.serve({
  port: Number(process.argv[2] ?? 0),
  hostname: "127.0.0.1",
  idleTimeout: 120,
  fetch(req) {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/big/")) {
      const total = Number(path.slice(5));
      let sent = 0;
      return new Response(
        new ReadableStream({
          type: "bytes",
          pull(c) {
            const n = Math.min(chunk.length, total - sent);
            if (n <= 0) return c.close();
            c.enqueue(chunk.subarray(0, n));
            sent += n;
          },
        }),
        { headers: { "content-type": "application/json" } },
      );
    }
    return new Response(small, { headers: { "content-type": "application/json" } });
  },
});
console.log(`upstream listening ${server.port}`);
