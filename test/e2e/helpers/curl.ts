// A client for HTTPS fronts (nginx, Caddy) in tests: curl, because it speaks HTTP/2 the way
// browsers and Element do, and says which version it spoke. Only to 127.0.0.1 (--resolve).
import { execFile } from "node:child_process";

export interface CurlAnswer {
  status: number;
  /** "1.1" or "2": the HTTP version curl and the front agreed on. */
  httpVersion: string;
  headers: Record<string, string>;
  body: Record<string, unknown>;
}

export interface CurlOptions {
  method?: string;
  token?: string;
  body?: unknown;
  http2?: boolean;
  maxTimeS?: number;
}

/** `path` through the front at https://localhost:`port`, trusting `caPath`. */
export function curl(port: number, caPath: string, path: string, o: CurlOptions = {}): Promise<CurlAnswer> {
  const args = [
    "-sS",
    "-i",
    o.http2 === false ? "--http1.1" : "--http2",
    "--cacert",
    caPath,
    "--resolve",
    `localhost:${port}:127.0.0.1`,
    "--max-time",
    String(o.maxTimeS ?? 60),
    "-X",
    o.method ?? "GET",
    "-w",
    "\n%{http_version}",
  ];
  if (o.token) args.push("-H", `Authorization: Bearer ${o.token}`);
  if (o.body !== undefined) args.push("-H", "Content-Type: application/json", "--data-binary", JSON.stringify(o.body));
  args.push(`https://localhost:${port}${path}`);
  return new Promise((resolve, reject) =>
    execFile(
      "curl",
      args,
      { maxBuffer: 64 << 20, timeout: ((o.maxTimeS ?? 60) + 10) * 1000 },
      (err, stdout, stderr) => {
        if (err) return reject(new Error(`curl ${o.method ?? "GET"} ${path}: ${stderr || err.message}`));
        const cut = stdout.lastIndexOf("\n");
        const httpVersion = stdout.slice(cut + 1).trim();
        const message = stdout.slice(0, cut);
        const split = message.indexOf("\r\n\r\n");
        const [statusLine, ...lines] = message.slice(0, split).split("\r\n");
        const headers: Record<string, string> = {};
        for (const l of lines) {
          const i = l.indexOf(":");
          headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
        }
        const text = message.slice(split + 4);
        let body: Record<string, unknown>;
        try {
          body = JSON.parse(text) as Record<string, unknown>;
        } catch {
          body = { text };
        }
        resolve({ status: Number(statusLine!.split(" ")[1]), httpVersion, headers, body });
      },
    ),
  );
}
