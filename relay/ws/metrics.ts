import { Counter, Gauge, type Registry } from "prom-client";

/** The messaging metrics, registered once per registry (a second attach on the same registry reuses them). */
export function messagingMetrics(registry: Registry, depth: () => Promise<number>) {
  const counter = (name: string, help: string, labelNames: string[] = []) =>
    (registry.getSingleMetric(name) as Counter<string> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
  let lastDepth = 0;
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
    mailboxDepth:
      (registry.getSingleMetric("chat_mailbox_depth") as Gauge<string> | undefined) ??
      new Gauge({
        name: "chat_mailbox_depth",
        help: "Messages waiting for their recipient's acknowledgement",
        registers: [registry],
        async collect() {
          // A scrape while storage is down reports the last known depth instead of failing /metrics.
          try {
            lastDepth = await depth();
          } catch {}
          this.set(lastDepth);
        },
      }),
  };
}

export type MessagingMetrics = ReturnType<typeof messagingMetrics>;
