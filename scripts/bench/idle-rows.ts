// The idle family's rows (idle.ts measures): the proxy's figures beside nginx's, held at the
// same count in the same run.
import { fmt, mb, type Row } from "./table.ts";

/** The polls held through one relay, measured. */
export interface Held {
  reached: number;
  opened: number;
  baseline: number;
  rssHeld: number;
  rssIdle: number;
  cpuShare: number;
  fdsPerPoll: number;
  answeredEarly: number;
  firstAnswer: string;
  probe?: string;
}

// The older target, per 10,000 polls: still shown, extrapolated when fewer are held.
const TEN_K = 10_000;
// Descriptors per held poll in a relay: the client's socket and the homeserver socket (the
// front end serves /sync itself; nginx the same). Measured too, and reported.
export const FDS_PER_POLL = 2;

/** `o`: the idle window, seconds. */
export function rows(
  p: Held,
  ng: Held | undefined,
  n: number,
  wanted: number,
  hard: number,
  fdBound: boolean,
  o: { idleSeconds: number },
): Row[] {
  // The figure is RSS once the polls sit idle, at the end of the idle window. The peak, just
  // after the burst that opened them, is shown beside it (the memory reducer gives the
  // burst's garbage back once RSS settles: memory-reducer.ts).
  const perPoll = (h: Held) => (h.rssIdle - h.baseline) / n;
  const at10k = p.baseline + perPoll(p) * TEN_K;
  const fam = "3 idle long-polls";
  const capped =
    n >= wanted
      ? undefined
      : fdBound
        ? `capped at ${fmt(n, 0)}: the open-files hard limit ${fmt(hard, 0)} (per process; raising it needs CAP_SYS_RESOURCE) at ${FDS_PER_POLL} fds per poll`
        : `capped at ${fmt(n, 0)}: the ephemeral port range (ip_local_port_range) bounds a relay's connections to one homeserver address`;
  const early = (h: Held) =>
    h.answeredEarly ? `${h.answeredEarly} answered early, first: ${h.firstAnswer.replaceAll("|", "/")}` : undefined;
  const out: Row[] = [
    {
      family: fam,
      figure: "long-polls held open through the proxy: reached the homeserver / opened",
      value: `${fmt(p.reached, 0)} / ${fmt(p.opened, 0)}`,
      reference: `wanted ${fmt(wanted, 0)}${ng ? `; nginx ${fmt(ng.reached, 0)} / ${fmt(ng.opened, 0)}` : ""}`,
      target: `${fmt(wanted, 0)}`,
      met: p.reached === wanted && p.answeredEarly === 0,
      note: [capped, early(p), ng && early(ng)].filter(Boolean).join("; ") || undefined,
    },
    {
      family: fam,
      figure: `RSS per held poll, kB, ${fmt(n, 0)} polls idle (end of the idle window)`,
      value: fmt(perPoll(p) / 1000, 2),
      reference: ng
        ? `nginx ${fmt(perPoll(ng) / 1000, 2)} (master and workers: ${mb(ng.baseline)} → ${mb(ng.rssIdle)})`
        : undefined,
      ratio: ng ? `${fmt(perPoll(p) / perPoll(ng), 2)}× nginx's` : undefined,
      target: "≤ nginx's",
      met: ng ? perPoll(p) <= perPoll(ng) : undefined,
    },
    {
      family: fam,
      figure: `proxy RSS with ${fmt(n, 0)} polls held, idle`,
      value: mb(p.rssIdle),
      reference: `baseline ${mb(p.baseline)}; ${mb(p.rssHeld)} 2 s after the burst`,
      ratio: n !== TEN_K ? `≈${mb(at10k, 0)} at 10,000` : undefined,
      target: "<150 MB at 10,000",
      met: at10k < 150e6,
      note: n !== TEN_K ? "10,000 inter- or extrapolated linearly" : undefined,
    },
    {
      family: fam,
      figure: `CPU while idle, % of one core over ${o.idleSeconds} s`,
      value: `${fmt(p.cpuShare * 100, 2)} %`,
      reference: ng ? `nginx ${fmt(ng.cpuShare * 100, 2)} %` : undefined,
      target: "<2 %",
      met: p.cpuShare < 0.02,
    },
    {
      family: fam,
      figure: "descriptors per held poll",
      value: fmt(p.fdsPerPoll, 2),
      reference: ng ? `nginx ${fmt(ng.fdsPerPoll, 2)}` : undefined,
    },
    {
      family: fam,
      figure: "a small GET through the proxy while the polls are held",
      value: p.probe ?? "n/a",
      target: "answered",
      met: p.probe?.endsWith(" ms") ?? false,
    },
  ];
  return out;
}
