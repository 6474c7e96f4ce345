import { HealthResponse } from "../../protocol/wire";
import type { Context } from "../context";
import { describeError } from "../errors";
import { currentSession } from "../session";

/** chat status: where things are, who is logged in, and whether the relay and the chain answer. */
export async function status(ctx: Pick<Context, "home" | "sessions" | "relayPins" | "outbox" | "relay" | "chain" | "rpcUrl" | "out">): Promise<void> {
  const session = ctx.sessions.read();
  const pin = ctx.relayPins.get(ctx.relay.origin);
  let relay: string;
  try {
    const health = await ctx.relay.get("/healthz", HealthResponse);
    relay = health.status;
  } catch (error) {
    const { code, message } = describeError(error);
    // /healthz answers 503 with a body when degraded
    relay = code === "INTERNAL" ? "degraded" : `${code}: ${message}`;
  }
  let chain: string;
  try {
    chain = `chain ${(await ctx.chain()).chainId}`;
  } catch (error) {
    chain = describeError(error).message;
  }
  const loggedIn = currentSession(ctx.sessions, ctx.relay.origin);
  const outbox = session ? ctx.outbox.list(session.username).length : 0;
  const record = {
    type: "status",
    home: ctx.home.root,
    relay: ctx.relay.origin,
    relayStatus: relay,
    rpc: ctx.rpcUrl,
    rpcStatus: chain,
    pinnedCertificate: pin?.certSha256 ?? null,
    chainId: pin?.chainId ?? null,
    contractAddress: pin?.contractAddress ?? null,
    user: loggedIn?.username ?? null,
    keyIndex: loggedIn?.keyIndex ?? null,
    sessionExpiresAt: loggedIn?.expiresAt ?? null,
    outbox,
  };
  ctx.out.data(
    record,
    [
      `home:      ${record.home}`,
      `relay:     ${record.relay} (${relay})`,
      `rpc:       ${record.rpc} (${chain})`,
      `pinned:    ${pin?.certSha256 ? `certificate sha256 ${pin.certSha256}` : "no certificate yet"}${pin?.chainId ? `, chain ${pin.chainId}, contract ${pin.contractAddress}` : ""}`,
      `user:      ${loggedIn ? `${loggedIn.username} (key #${loggedIn.keyIndex}, session until ${new Date(loggedIn.expiresAt).toISOString()})` : session ? `${session.username}: session expired, log in again` : "not logged in"}`,
      `outbox:    ${outbox} message(s) waiting`,
    ].join("\n"),
  );
}
