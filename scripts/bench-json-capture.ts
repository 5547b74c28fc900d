// Throughput of TopLevelCapture on a realistic ~5 MB /sync body (rooms with timeline events),
// fed in 64 KiB chunks, next to JSON.parse of the same bytes. Figures only, no thresholds. The
// cases run interleaved, round after round, so a busy machine slows them all alike.
// Usage: npx bun scripts/bench-json-capture.ts [MB] [rounds]   (also: npx deno run -A …)
import { TopLevelCapture } from "../src/delivery/json/json-capture.ts";
import { bigSyncBody } from "../test/helpers/bodies.ts";

const mb = Number(process.argv[2] ?? 5);
const rounds = Number(process.argv[3] ?? 40);
const raw = Buffer.from(JSON.stringify(bigSyncBody(mb * 1_000_000, { changed: ["@x:y"], left: ["@l:y"] })));
const text = raw.toString();
const pretty = Buffer.from(JSON.stringify(JSON.parse(text), null, 2));
const chunked = (buf: Buffer, size: number) =>
  Array.from({ length: Math.ceil(buf.length / size) }, (_, k) => buf.subarray(k * size, (k + 1) * size));

let sink = 0; // results stay alive so no engine can drop the work
function capture(chunks: Buffer[]): void {
  const cap = new TopLevelCapture(["device_lists"]);
  for (const c of chunks) cap.feed(c);
  sink += cap.finish()!.get("device_lists")!.length;
}
const c64 = chunked(raw, 64 * 1024),
  c16 = chunked(raw, 16 * 1024),
  p64 = chunked(pretty, 64 * 1024);
const cases: { name: string; bytes: number; run: () => void }[] = [
  { name: "TopLevelCapture, 64 KiB chunks", bytes: raw.length, run: () => capture(c64) },
  { name: "TopLevelCapture, 16 KiB chunks", bytes: raw.length, run: () => capture(c16) },
  { name: "TopLevelCapture, one chunk", bytes: raw.length, run: () => capture([raw]) },
  { name: "TopLevelCapture, indented, 64 KiB", bytes: pretty.length, run: () => capture(p64) },
  {
    name: "JSON.parse(string)",
    bytes: raw.length,
    run: () => void (sink += Object.keys(JSON.parse(text) as object).length),
  },
  {
    name: "JSON.parse(buffer.toString())",
    bytes: raw.length,
    run: () => void (sink += Object.keys(JSON.parse(raw.toString()) as object).length),
  },
];

const times = cases.map(() => [] as number[]);
for (let r = 0; r < rounds + 5; r++) {
  cases.forEach((c, k) => {
    const t = performance.now();
    c.run();
    if (r >= 5) times[k]!.push(performance.now() - t); // the first rounds warm the JITs up
  });
}

const runtime =
  typeof Bun !== "undefined" ? `Bun ${Bun.version}` : "Deno" in globalThis ? "Deno" : `Node ${process.version}`;
console.log(
  `${runtime}: ${(raw.length / 1e6).toFixed(2)} MB compact /sync body (${(pretty.length / 1e6).toFixed(2)} MB indented), ${rounds} interleaved rounds\n`,
);
console.log(`${"".padEnd(36)} ${"min ms".padStart(8)} ${"median".padStart(8)} ${"MB/s (median)".padStart(14)}`);
cases.forEach((c, k) => {
  const ts = times[k]!.sort((a, b) => a - b);
  const med = ts[Math.floor(ts.length / 2)]!;
  console.log(
    `${c.name.padEnd(36)} ${ts[0]!.toFixed(2).padStart(8)} ${med.toFixed(2).padStart(8)} ${(c.bytes / 1e6 / (med / 1000)).toFixed(0).padStart(14)}`,
  );
});
if (sink === 0) console.log("(no results)");
