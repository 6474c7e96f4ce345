import { HealthResponse } from "../../protocol/wire";
import type { Context } from "../context";
import type { ConnectionDeps } from "../connection";
import { describeError } from "../errors";
import { describeWaiting, localTime, waitingMessages, type WaitingMessage } from "../messaging";
import { MlsChat, type MlsChatDeps } from "../mls/chat";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { currentSession } from "../session";
import type { TrustAnchor } from "../trust-anchor";

/**
 * chat status: where things are, who is logged in, whether the relay and the chain answer, and which
 * contract this client trusts, where that choice came from and whether the relay and the code agree;
 * when logged in, the owner's self-check and the sent messages the relay holds but has not delivered.
 */
export async function status(
  ctx: Pick<Context, "home" | "sessions" | "relayPins" | "outbox" | "history" | "relay" | "chain" | "rpcUrl" | "out" | "trustAnchor" | "deployment"> &
    ConnectionDeps &
    OwnAccountDeps &
    MlsChatDeps,
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
  let waiting: WaitingMessage[] = [];
  let waitingProblem: string | undefined;
  if (loggedIn && contractCheck === "ok") {
    // Warns by itself, loudly, about a pending reset or a replaced key of the user's own account.
    try {
      await checkOwnAccount(ctx, loggedIn.username);
    } catch (error) {
      ctx.out.info(`note: could not check ${loggedIn.username} on chain (${describeError(error).message})`, { always: true });
    }
    try {
      waiting = await waitingMessages(ctx, loggedIn);
      waiting.push(...(await (await MlsChat.open(ctx, loggedIn)).waiting()));
    } catch (error) {
      const { code, message } = describeError(error);
      waitingProblem = `${code}: ${message}`;
    }
  }
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
    waiting: waiting.map((m) => ({ id: m.id, to: m.to, timestamp: m.timestamp, state: m.state, description: describeWaiting(m) })),
    waitingCheck: waitingProblem ?? (loggedIn && contractCheck === "ok" ? "ok" : "not checked"),
  };
  ctx.out.data(
    record,
    [
      `home:      ${record.home}`,
      `relay:     ${record.relay} (${relay})`,
      `rpc:       ${record.rpc} (${chain})`,
      `contract:  ${anchor ? `${anchor.contractAddress} on chain ${anchor.chainId}, from ${anchor.sourceDescription} (${contractCheck})` : `none: ${anchorProblem}`}`,
      `pinned:    ${pin?.certSha256 ? `certificate sha256 ${pin.certSha256}` : "no certificate yet"}${pin?.chainId ? `, chain ${pin.chainId}, contract ${pin.contractAddress}` : ""}`,
      `user:      ${loggedIn ? `${loggedIn.username} (key #${loggedIn.keyIndex}, session until ${localTime(loggedIn.expiresAt)})` : session ? `${session.username}: session expired, log in again` : "not logged in"}`,
      `outbox:    ${outbox} message(s) waiting`,
      ...(waitingProblem ? [`undelivered: not known (${waitingProblem})`] : []),
      ...(waiting.length > 0 ? [`undelivered: ${waiting.length} message(s) accepted by the relay, not yet delivered:`, ...waiting.map((m) => `  ${describeWaiting(m)}`)] : []),
    ].join("\n"),
  );
}
