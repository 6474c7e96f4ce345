import { Counter, Gauge, type Registry } from "prom-client";

/** How often the mailbox depth is counted when nobody says otherwise. */
export const DEFAULT_DEPTH_REFRESH_MS = 15_000;

/**
 * The mailbox depth gauge. Counting the depth can scan a whole table, so a scrape never waits for a count
 * (except the very first): it reports the last one and, when that is older than `refreshMs`, starts the
 * next in the background. However often /metrics is scraped, the store is counted at most once per
 * `refreshMs` (and never twice at once). A count that fails keeps the last known depth.
 */
export function mailboxDepthGauge(registry: Registry, depth: () => Promise<number>, refreshMs = DEFAULT_DEPTH_REFRESH_MS): Gauge<string> {
  const existing = registry.getSingleMetric("chat_mailbox_depth") as Gauge<string> | undefined;
  if (existing) return existing;
  let lastDepth = 0;
  let countedAt: number | null = null;
  let counting: Promise<void> | null = null;
  const count = () =>
    (counting ??= depth()
      .then(
        (n) => {
          lastDepth = n;
        },
        () => {},
      )
      .finally(() => {
        countedAt = Date.now();
        counting = null;
      }));
  return new Gauge({
    name: "chat_mailbox_depth",
    help: `Messages waiting for their recipient's acknowledgement (counted at most every ${Math.round(refreshMs / 1000)} s)`,
    registers: [registry],
    async collect() {
      if (countedAt === null) await count();
      else if (Date.now() - countedAt >= refreshMs) void count();
      this.set(lastDepth);
    },
  });
}

/** The messaging metrics, registered once per registry (a second attach on the same registry reuses them). */
export function messagingMetrics(registry: Registry, depth: () => Promise<number>) {
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
  return {
    connections:
      (registry.getSingleMetric("chat_ws_connections") as Gauge<string> | undefined) ??
      new Gauge({ name: "chat_ws_connections", help: "Open WebSocket connections", registers: [registry] }),
    relayed: counter("chat_messages_relayed_total", "Send frames accepted (stored or recognised as a re-send)"),
    stored: counter("chat_messages_stored_total", "Messages newly stored in the mailbox"),
    delivered: counter("chat_messages_delivered_total", "Message frames pushed to recipient connections (backlog and live)"),
    acked: counter("chat_messages_acked_total", "Acknowledgements received from recipients"),
    purged: counter("chat_mailbox_purged_total", "Expired mailbox messages purged"),
    rejected: counter("chat_ws_frames_rejected_total", "Client frames answered with an error frame", ["code"]),
    closedByRelay: counter("chat_ws_closed_by_relay_total", "Connections the relay closed for a bound (slow reader, abuse, backlog timeout), by close code", ["code"]),
    noticesSent: counter("chat_ws_group_notices_sent_total", "Delivery Service notices (group, welcome) written to connections"),
    noticesCoalesced: counter("chat_ws_group_notices_coalesced_total", "Delivery Service notices merged into one already waiting for a backed-up connection"),
    earlySent: counter("chat_ws_early_entries_sent_total", "Application messages handed to members' connections before they were durable (early frames)"),
    earlyDropped: counter("chat_ws_early_entries_dropped_total", "Early frames not written because the connection was backed up (the entry follows with its seq)"),
    framesSent: counter("chat_ws_frames_sent_total", "Frames written to WebSocket connections (messages, notices, answers, errors)"),
    socketWrites: counter("chat_ws_socket_writes_total", "Writes to WebSocket connections: the frames one connection gets in one turn of the event loop leave in one"),
    refusedUpgrades: counter("chat_ws_upgrades_refused_total", "WebSocket upgrades refused before a socket was accepted, by cap", ["cap"]),
    // The relay's server registers it first with the configured refresh; alone (tests), the default applies.
    mailboxDepth: mailboxDepthGauge(registry, depth),
  };
}

export type MessagingMetrics = ReturnType<typeof messagingMetrics>;
