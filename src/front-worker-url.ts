// A front-end thread's entrypoint. Resolved here, beside main.ts and front-worker.ts: in the
// compiled binary this module is bundled into main's chunk and the worker is embedded as its
// own entrypoint there, so the relative URL is right both from source and from the binary.
export const FRONT_WORKER: string = new URL("./front-worker.ts", import.meta.url).href;
// The thread that reads large /keys/query answers for self-healing (delivery/view-parser.ts): the
// same arrangement.
export const VIEW_WORKER: URL = new URL("./view-worker.ts", import.meta.url);
