// Reproduces the JavaScriptCore behaviour behind src/slots.ts, standalone, for a report
// upstream: a Map that deletes keeps the deleted entries' objects reachable for young
// collections, so objects that die young are promoted and wait for a full collection.
// Usage: BUN_JSC_logGC=1 bun scripts/bench/map-churn.ts MODE 2>&1 | grep -c FullCollection
//   MODE none        request-like objects, 64 alive at a time, no Map
//   MODE delete      each is also set in a Map on creation and deleted when it dies
//   MODE overwrite   64 reused keys: the value is overwritten with undefined, never deleted
// Measured with Bun 1.4.5 over 3 s: "none" and "overwrite" promote ~0.1 MB per young
// collection with ~10 full collections; "delete" ~9 MB, with a full collection after each
// young one (docs/performance.md).
const mode = process.argv[2] ?? "delete";
const map = new Map<string, object | undefined>();
let seq = 0;

function born(): { key: string } {
  const key = mode === "overwrite" ? `k${seq % 64}` : `k${seq}`;
  const o = { key, a: new Array(64).fill(seq++), b: { c: new Array(64).fill(1) } };
  if (mode !== "none") map.set(key, o);
  return o;
}

function died(o: { key: string }): void {
  if (mode === "delete") map.delete(o.key);
  else if (mode === "overwrite") map.set(o.key, undefined);
}

const alive = Array.from({ length: 64 }, born);
const end = performance.now() + 3000;
let i = 0;
(function churn() {
  for (let k = 0; k < 2000; k++) {
    const j = i++ % 64;
    died(alive[j]!);
    alive[j] = born();
  }
  if (performance.now() < end) setImmediate(churn);
})();
