/**
 * The real relay for bench:relay, in a process of its own (so that it has its own core and its own
 * /proc figures): assembled by the same createRelayStack as relay/main.ts (the MySQL cache and mailbox,
 * the ethers chain on anvil, TLS from TLS_CERT/TLS_KEY), from the same settings parsed by
 * relay/config.ts, with one difference: the per-connection send rate limit (100 msg/s by default, a
 * policy against abusive users, not a capacity) is raised to BENCH_MESSAGES_PER_SECOND, and the per-user
 * limit on POSTed messages (6,000 a minute) to its largest value, because the benchmark pushes each
 * connection and user far beyond them. Prints {"ready":true,"port":N} on stdout when
 * listening; SIGTERM closes everything. With BENCH_PROFILE_FILE set, SIGUSR2 starts a CPU profile of this
 * process (node:inspector, so that no sampler runs, and costs CPU, outside the window measured) and the
 * next SIGUSR2 writes it there, then prints {"profileWritten":true}.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { monitorEventLoopDelay, performance } from "node:perf_hooks";
import type { Pool } from "mysql2/promise";
import pino from "pino";
import { parseConfig } from "../relay/config";
import { createRelayStack } from "../relay/stack";

/**
 * BENCH_TRACE_SQL=1: time every pool.query and pool.execute by statement kind (first words), to see where the mailbox
 * waits; the summary goes to stderr on SIGTERM. Wraps the pool object only, never the relay's code.
 */
function traceQueries(pool: Pool): () => Record<string, { n: number; avgMs: number; maxMs: number; avgParams: number }> {
  const stats = new Map<string, { n: number; ms: number; max: number; params: number }>();
  // Both entry points of the pool (text and prepared statements); statements on a connection taken with
  // getConnection (inside a transaction) are not seen.
  for (const method of ["query", "execute"] as const) {
    const original = (pool[method] as (...args: unknown[]) => Promise<unknown>).bind(pool);
    (pool as unknown as Record<string, unknown>)[method] = async (...args: unknown[]) => {
      const sql = String(typeof args[0] === "string" ? args[0] : (args[0] as { sql?: string })?.sql ?? "");
      const kind = sql.trim().split(/\s+/).slice(0, 3).join(" ");
      const started = performance.now();
      try {
        return await original(...args);
      } finally {
        const ms = performance.now() - started;
        const s = stats.get(kind) ?? { n: 0, ms: 0, max: 0, params: 0 };
        s.n++;
        s.ms += ms;
        s.max = Math.max(s.max, ms);
        s.params += Array.isArray(args[1]) ? args[1].length : 0;
        stats.set(kind, s);
      }
    };
  }
  return () =>
    Object.fromEntries(
      [...stats].map(([k, s]) => [k, { n: s.n, avgMs: Math.round((s.ms / s.n) * 10) / 10, maxMs: Math.round(s.max), avgParams: Math.round(s.params / s.n) }]),
    );
}

async function main() {
  const config = parseConfig({ RATE_LIMIT_APPENDS_PER_USER: "100000000", ...process.env });
  if (!config.mysqlUrl || !config.tlsCertFile || !config.tlsKeyFile) throw new Error("bench relay needs MYSQL_URL, TLS_CERT and TLS_KEY");
  const logger = pino({ level: config.logLevel, base: { service: "bench-relay" } });
  const rate = Number(process.env.BENCH_MESSAGES_PER_SECOND || 1_000_000);
  const stack = await createRelayStack({
    config,
    logger,
    overrides: {
      messagingLimits: { messagesPerSecond: rate, messageBurst: 2 * rate, framesPerSecond: 10 * rate, maxConnections: 100_000 },
      // BENCH_POOL_CONNECTIONS: the MySQL pool's size, to measure whether more connections pay (default: the relay's).
      ...(Number(process.env.BENCH_POOL_CONNECTIONS) > 0 ? { poolConnectionLimit: Number(process.env.BENCH_POOL_CONNECTIONS) } : {}),
    },
  });
  // The pool opens its connections lazily: both experiments below apply to every connection it makes.
  const pool = stack.pool!;
  if (process.env.BENCH_READ_COMMITTED === "1") {
    // Experiment only (bench:relay --read-committed 1): without REPEATABLE READ's gap locks, an ack's
    // UPDATE no longer blocks the INSERT of the same sender's next message to the same recipient.
    (pool as unknown as { pool: { on(e: string, f: (c: { query(sql: string): void }) => void): void } }).pool.on("connection", (c) =>
      c.query("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"),
    );
  }
  const trace = process.env.BENCH_TRACE_SQL === "1" ? traceQueries(pool) : null;
  // Event-loop delay: how long ready work waited for this process's single thread.
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  if (trace) loopDelay.enable();
  const { port } = await stack.listen();
  process.stdout.write(`${JSON.stringify({ ready: true, port, pid: process.pid })}\n`);

  const stop = async () => {
    if (trace) {
      const ms = (ns: number) => Math.round(ns / 1e5) / 10;
      process.stderr.write(`${JSON.stringify({ sql: trace(), eventLoopDelayMs: { p50: ms(loopDelay.percentile(50)), p99: ms(loopDelay.percentile(99)), max: ms(loopDelay.max) } })}\n`);
    }
    await stack.close();
    process.exit(0);
  };
  const profileFile = process.env.BENCH_PROFILE_FILE;
  if (profileFile) {
    const session = new Session();
    session.connect();
    let profiling = false;
    process.on("SIGUSR2", () => {
      profiling = !profiling;
      if (profiling) return session.post("Profiler.enable", () => session.post("Profiler.start"));
      session.post("Profiler.stop", (error, answer) => {
        if (!error) writeFileSync(profileFile, JSON.stringify(answer.profile));
        process.stdout.write(`${JSON.stringify({ profileWritten: !error })}\n`);
      });
    });
  }
  process.once("SIGTERM", () => void stop());
  process.once("SIGINT", () => void stop());
}

main().catch((error) => {
  process.stderr.write(`bench relay: ${error?.stack ?? error}\n`);
  process.exit(1);
});
