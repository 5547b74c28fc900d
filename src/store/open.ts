// --database: which back end holds the durable state (docs/architecture.md "Durable state").
// `sqlite:` is the embedded file under --data-dir (the default), `sqlite:DIR` one under DIR,
// `postgres://…` a PostgreSQL database several replicas share.
import { openPostgresStore, redactUrl } from "./postgres.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

export type StoreLocation = { kind: "sqlite"; dir: string } | { kind: "postgres"; url: string };

export function storeLocation(database: string, dataDir: string): StoreLocation {
  if (/^postgres(ql)?:\/\//i.test(database)) return { kind: "postgres", url: database };
  if (!database.toLowerCase().startsWith("sqlite:")) throw new Error(`store: unknown database ${redactUrl(database)}`);
  const dir = database.slice("sqlite:".length);
  return { kind: "sqlite", dir: dir === "" ? dataDir : dir };
}

/** For messages: the location without a password. */
export function describeLocation(l: StoreLocation): string {
  return l.kind === "sqlite" ? `sqlite:${l.dir}` : redactUrl(l.url);
}

export function openStore(l: StoreLocation, opts: { noMigrate?: boolean } = {}): Promise<Store> {
  return l.kind === "sqlite" ? openSqliteStore(l.dir) : openPostgresStore(l.url, opts);
}
