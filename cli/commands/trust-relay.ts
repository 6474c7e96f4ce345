import type { Context } from "../context";
import { probeCertificate } from "../relay-tls";

/** chat trust-relay: explicitly trust the certificate the relay shows now (after a change). */
export async function trustRelay(ctx: Pick<Context, "relay" | "relayPins" | "out">): Promise<void> {
  const relay = ctx.relay;
  if (!relay.secure) {
    ctx.out.data({ type: "trust-relay", relay: relay.origin, tls: false }, `${relay.origin} does not use TLS: nothing to pin`);
    return;
  }
  const before = ctx.relayPins.get(relay.origin)?.certSha256 ?? null;
  const seen = await probeCertificate(relay.url);
  ctx.relayPins.update(relay.origin, { certSha256: seen.fingerprint, certPem: seen.pem, pinnedAt: Date.now() });
  ctx.out.data(
    { type: "trust-relay", relay: relay.origin, previous: before, fingerprint: seen.fingerprint, changed: before !== seen.fingerprint },
    before === seen.fingerprint
      ? `The certificate of ${relay.origin} is unchanged: sha256 ${seen.fingerprint}`
      : `Now trusting ${relay.origin} with certificate sha256 ${seen.fingerprint}${before ? ` (was ${before})` : ""}`,
  );
}
