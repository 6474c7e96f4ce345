/**
 * Shared helpers of the benchmarks (no benchmark here): options, statistics, child processes, /proc.
 * Every benchmark prints progress on stderr and ONE JSON object as the last line of stdout.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import os from "node:os";

export const ROOT = path.resolve(__dirname, "..");

/**
 * Numeric options from `--name value`, `--name=value`, or the environment variable BENCH_NAME
 * (upper case, dashes as underscores), in that order of precedence; unknown flags stop the run.
 */
export function options<T extends Record<string, number>>(defaults: T, argv = process.argv.slice(2)): T {
  const out: Record<string, number> = { ...defaults };
  for (const name of Object.keys(defaults)) {
    const env = process.env[`BENCH_${name.replace(/-/g, "_").toUpperCase()}`];
    if (env !== undefined && env !== "") out[name] = parseNumber(name, env);
  }
  for (let i = 0; i < argv.length; i++) {
    const match = /^--([a-z0-9-]+)(?:=(.*))?$/.exec(argv[i]);
    if (!match || !(match[1] in defaults)) {
      throw new Error(`unknown option ${argv[i]}; known: ${Object.keys(defaults).map((k) => `--${k}`).join(" ")}`);
    }
    const value = match[2] ?? argv[++i];
    if (value === undefined) throw new Error(`--${match[1]} needs a value`);
    out[match[1]] = parseNumber(match[1], value);
  }
  return out as T;
}

function parseNumber(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: expected a non-negative number, got "${value}"`);
  return n;
}

/** Progress on stderr, so that stdout's last line stays the JSON result. */
export function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i];
}

export function sortedCopy(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values as ArrayLike<number>).sort();
}

export function median(values: number[]): number {
  return percentile(sortedCopy(values), 50);
}

export const round = (n: number, digits = 2) => Math.round(n * 10 ** digits) / 10 ** digits;

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The machine, for the result: the figures mean little without it. */
export function machine() {
  // The load average says how much of the machine was ours: other jobs share these VMs.
  return {
    cpus: os.cpus().length,
    cpu: os.cpus()[0]?.model ?? "unknown",
    node: process.version,
    memGiB: round(os.totalmem() / 2 ** 30, 1),
    loadavg_1m_at_end: round(os.loadavg()[0], 2),
  };
}

/** VmRSS / VmHWM of a process in bytes, from /proc/PID/status (Linux). */
export function procMemory(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** Cumulative CPU time (user + system) of a process in ms, from /proc/PID/stat. */
export function procCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of proc(5))
  return (ticks * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * Runs a TypeScript file in a child Node process through tsx's loader (one process: its PID is the
 * program's, so /proc figures are the program's own). Resolves once the child prints a JSON line with
 * `ready: true` on stdout, with that object.
 */
export async function startTsChild(params: {
  script: string;
  env: Record<string, string>;
  nodeArgs?: string[];
  timeoutMs?: number;
}): Promise<{ child: ChildProcess; ready: any; output: () => string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [...(params.nodeArgs ?? []), "--import", "tsx", params.script], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...params.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const ready = await new Promise<any>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${params.script} not ready in time:\n${output.slice(-2000)}`)), params.timeoutMs ?? 60_000);
    let buffered = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk;
      buffered += chunk;
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line.startsWith("{") && line.includes('"ready":true')) {
          clearTimeout(timer);
          resolve(JSON.parse(line));
        }
      }
    });
    child.stderr!.on("data", (chunk: Buffer) => (output += chunk));
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${params.script} exited (${code ?? signal}):\n${output.slice(-2000)}`));
    });
  });
  return {
    child,
    ready,
    output: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        const force = setTimeout(() => child.kill("SIGKILL"), 10_000);
        child.once("exit", () => {
          clearTimeout(force);
          resolve();
        });
        child.kill("SIGTERM");
      }),
  };
}

/** The PIDs of a process's children (Linux /proc/PID/task/PID/children). */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** Prints the result: the last line of stdout is exactly this JSON object. */
export function result(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}
