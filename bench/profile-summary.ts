/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: self time by function and by
 * package (node_modules/<name>, node: internals, this repository's folders, GC, idle).
 * Also runnable: `tsx bench/profile-summary.ts FILE.cpuprofile [top]`.
 */
import { readFileSync } from "node:fs";
import { ROOT, round } from "./lib";

interface ProfileNode {
  id: number;
  children?: number[];
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

export interface ProfileSummary {
  totalMs: number;
  /** share of non-idle time, by package or folder */
  byPackage: { name: string; ms: number; pct: number }[];
  /** heaviest functions by self time (share of non-idle time) */
  topFunctions: { fn: string; where: string; ms: number; pct: number; calledFrom: string }[];
}

function packageOf(url: string, fn: string): string {
  if (!url) return fn.startsWith("(") ? fn : "(native)";
  if (url.startsWith("node:")) return "node: internals";
  const nm = url.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = url.slice(nm + "node_modules/".length).split("/");
    return rest[0].startsWith("@") ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  const local = url.replace(/^file:\/\//, "").replace(`${ROOT}/`, "");
  return local.split("/").slice(0, local.includes("/") ? 2 : 1).join("/");
}

export function summarizeCpuProfile(file: string, top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, "utf8")) as {
    nodes: ProfileNode[];
    samples: number[];
    timeDeltas: number[];
  };
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // The callers of a node, nearest first, as "fn (file:line)", skipping anonymous wrappers' noise.
  const callers = (id: number, depth = 4): string => {
    const out: string[] = [];
    for (let p = parent.get(id); p !== undefined && out.length < depth; p = parent.get(p)) {
      const f = byId.get(p)!.callFrame;
      if (f.functionName === "(root)") break;
      const file = f.url.replace(/^file:\/\//, "").replace(`${ROOT}/`, "").replace(/^.*node_modules\//, "");
      out.push(`${f.functionName || "(anonymous)"}${file ? ` ${file}:${f.lineNumber + 1}` : ""}`);
    }
    return out.join(" < ");
  };
  // Samples of the profiler's own work (node:inspector handing the profile over) are not the program's.
  const profilerOwn = new Map<number, boolean>();
  const isProfilerOwn = (id: number): boolean => {
    let known = profilerOwn.get(id);
    if (known === undefined) {
      const p = parent.get(id);
      known = byId.get(id)!.callFrame.url === "node:inspector" || (p !== undefined && isProfilerOwn(p));
      profilerOwn.set(id, known);
    }
    return known;
  };
  const chains = new Map<string, Map<string, number>>(); // function key -> caller chain -> µs
  const self = new Map<number, number>(); // node id -> µs
  profile.samples.forEach((id, i) => {
    if (!isProfilerOwn(id)) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  let totalUs = 0;
  let idleUs = 0;
  const packages = new Map<string, number>();
  const functions = new Map<string, number>();
  for (const [id, us] of self) {
    const frame = byId.get(id)!.callFrame;
    totalUs += us;
    if (frame.functionName === "(idle)") {
      idleUs += us;
      continue;
    }
    const pkg = packageOf(frame.url, frame.functionName);
    packages.set(pkg, (packages.get(pkg) ?? 0) + us);
    const where = frame.url ? `${frame.url.replace(/^file:\/\//, "").replace(`${ROOT}/`, "")}:${frame.lineNumber + 1}` : "";
    const key = `${frame.functionName || "(anonymous)"}\t${where}`;
    functions.set(key, (functions.get(key) ?? 0) + us);
    const chain = callers(id);
    const byChain = chains.get(key) ?? new Map<string, number>();
    byChain.set(chain, (byChain.get(chain) ?? 0) + us);
    chains.set(key, byChain);
  }
  const busyUs = totalUs - idleUs || 1;
  const rows = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: round(totalUs / 1000, 0),
    byPackage: rows(packages)
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: round(us / 1000, 0), pct: round((100 * us) / busyUs, 1) })),
    topFunctions: rows(functions)
      .slice(0, top)
      .map(([key, us]) => {
        const [fn, where] = key.split("\t");
        const calledFrom = rows(chains.get(key)!)[0]?.[0] ?? "";
        return { fn, where, ms: round(us / 1000, 0), pct: round((100 * us) / busyUs, 1), calledFrom };
      }),
  };
}

if (require.main === module) {
  const [file, top] = process.argv.slice(2);
  if (!file) {
    process.stderr.write("usage: tsx bench/profile-summary.ts FILE.cpuprofile [top]\n");
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify(summarizeCpuProfile(file, Number(top ?? 15)), null, 2)}\n`);
}
