import type { Mailbox } from "../storage/mailbox";
import type { FailureLog } from "./failure-log";
import type { MessagingMetrics } from "./metrics";

export interface MailboxPurge {
  /** Deletes expired messages now; returns how many. */
  purgeExpired(): Promise<number>;
  stop(): void;
}

/** Deletes expired mailbox messages at once and then every `intervalMs`. */
export function startMailboxPurge(params: {
  mailbox: Mailbox;
  clock: () => number;
  intervalMs: number;
  metrics: MessagingMetrics;
  logFailure: FailureLog;
}): MailboxPurge {
  const { mailbox, clock, metrics, logFailure } = params;
  const purgeExpired = async () => {
    const n = await mailbox.purgeExpired(clock());
    metrics.purged.inc(n);
    return n;
  };
  const run = () => purgeExpired().catch((error) => logFailure("mailbox purge failed", error));
  const timer = setInterval(run, params.intervalMs);
  timer.unref();
  void run();
  return { purgeExpired, stop: () => clearInterval(timer) };
}
