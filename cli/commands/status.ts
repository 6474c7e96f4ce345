import { HealthResponse } from "../../protocol/wire";
import type { Context } from "../context";
import { describeError } from "../errors";
import { currentSession } from "../session";
import type { TrustAnchor } from "../trust-anchor";

/**
 * chat status: where things are, who is logged in, whether the relay and the chain answer, and which
 * contract this client trusts, where that choice came from and whether the relay and the code agree.
 */
export async function status(
  ctx: Pick<Context, "home" | "sessions" | "relayPins" | "outbox" | "relay" | "chain" | "rpcUrl" | "out" | "trustAnchor" | "deployment">,
): Promise<void> {
  const session = ctx.sessions.read();
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
  let anchor: TrustAnchor | undefined;
  let anchorProblem: string | undefined;
  try {
    const chainId = (await ctx.chain()).chainId;
    chain = `chain ${chainId}`;
    try {
      anchor = ctx.trustAnchor(chainId);
    } catch (error) {
      anchorProblem = describeError(error).message;
    }
  } catch (error) {
    chain = describeError(error).message;
    anchorProblem = "unknown until your chain answers";
  }
  // The relay must name the trusted contract, whose code is checked once per pin: say whether both hold.
  let contractCheck: string;
  if (!anchor) {
    contractCheck = "not checked";
  } else {
    try {
      await ctx.deployment();
      contractCheck = "ok";
    } catch (error) {
      const { code, message } = describeError(error);
      contractCheck = `${code}: ${message}`;
    }
  }
  const pin = ctx.relayPins.get(ctx.relay.origin);
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
    chainId: anchor?.chainId.toString() ?? null,
    contractAddress: anchor?.contractAddress ?? null,
    contractSource: anchor?.source ?? null,
    contractCheck,
    pinnedChainId: pin?.chainId ?? null,
    pinnedContractAddress: pin?.contractAddress ?? null,
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
      `contract:  ${anchor ? `${anchor.contractAddress} on chain ${anchor.chainId}, from ${anchor.sourceDescription} (${contractCheck})` : `none: ${anchorProblem}`}`,
      `pinned:    ${pin?.certSha256 ? `certificate sha256 ${pin.certSha256}` : "no certificate yet"}${pin?.chainId ? `, chain ${pin.chainId}, contract ${pin.contractAddress}` : ""}`,
      `user:      ${loggedIn ? `${loggedIn.username} (key #${loggedIn.keyIndex}, session until ${new Date(loggedIn.expiresAt).toISOString()})` : session ? `${session.username}: session expired, log in again` : "not logged in"}`,
      `outbox:    ${outbox} message(s) waiting`,
    ].join("\n"),
  );
}
