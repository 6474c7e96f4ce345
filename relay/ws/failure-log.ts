import { performance } from "node:perf_hooks";
import type pino from "pino";

export type FailureLog = (what: string, error: unknown) => void;

/** Storage and bus failures can come once per message: logs them at most once per `intervalMs`. */
export function throttledFailureLog(logger: pino.Logger, intervalMs = 5_000): FailureLog {
  let last = -Infinity;
  return (what, error) => {
    const now = performance.now();
    if (now - last < intervalMs) return;
    last = now;
    logger.warn({ err: { message: error instanceof Error ? error.message : String(error) } }, what);
  };
}
