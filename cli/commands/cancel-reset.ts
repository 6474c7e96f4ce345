import { ChatError } from "../../protocol/errors";
import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { assertUsername } from "../../protocol/username";
import { TransactionResponse } from "../../protocol/wire";
import type { LoginDeps } from "../auth";
import type { Context } from "../context";
import type { UnlockedKey } from "../keystore";
import { isoTime } from "../own-account";
import { currentSession } from "../session";

/**
 * chat cancel-reset [USER]: drops a pending reset of the account, signed by its CURRENT key on this device
 * (the contract checks the signature; the relay only carries it). Without a session holding that key, the
 * password unlocks it. Confirmed on the client's own chain afterwards.
 */
export async function cancelReset(
  ctx: LoginDeps & Pick<Context, "registry" | "keys" | "out" | "passwords" | "deadline">,
  rawUsername?: string,
): Promise<void> {
  const session = currentSession(ctx.sessions, ctx.relay.origin);
  const username = rawUsername !== undefined ? assertUsername(rawUsername) : session?.username;
  if (!username) throw new ChatError("USAGE", "not logged in: run chat cancel-reset USER");
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  const pending = await registry.pendingReset(username);
  if (!pending) throw new ChatError("NO_PENDING_RESET", `no reset of ${username} is pending on chain: nothing to cancel`);
  const current = await registry.currentKey(username);
  const local = ctx.keys.localKeys(username).find((key) => key.index === current.index && !key.pending);
  if (!local || local.address !== current.address) {
    throw new ChatError("NO_LOCAL_KEY", `this device does not hold ${username}'s current key (key ${current.index}): only a device that does can cancel`);
  }
  let key: UnlockedKey | undefined = session?.username === username ? session.keys.find((k) => k.index === current.index) : undefined;
  if (!key) {
    const password = await ctx.passwords.password(`Password for ${username} (to unlock key ${current.index}): `);
    key = await ctx.out.progress("unlocking the keystore (scrypt)", ctx.keys.unlock(username, current.index, password));
  }
  const nonce = await registry.nonce(username);
  const deadline = await ctx.deadline();
  const signature = signRegistryTypedData({
    privateKey: key.privateKey,
    domain: registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress }),
    data: { primaryType: "CancelReset", message: { username, nonce, deadline: BigInt(deadline) } },
  });
  const receipt = await ctx.out.progress(
    `cancelling the pending reset of ${username}: waiting for the transaction's block`,
    ctx.relay.post("/v1/reset/cancel", { username, deadline, signature }, TransactionResponse),
    { transaction: true },
  );
  const after = await registry.pendingReset(username);
  if (after?.address === pending.address) {
    throw new ChatError("KEY_MISMATCH", `the chain still shows the reset of ${username} pending after the relay's answer`);
  }
  ctx.out.data(
    {
      type: "reset-cancelled",
      username,
      cancelledKey: pending.address,
      effectiveAt: pending.effectiveAt,
      blockNumber: receipt.blockNumber,
      transactionHash: receipt.transactionHash,
    },
    `Cancelled the reset of ${username} (it would have taken effect at ${isoTime(pending.effectiveAt)}), confirmed on chain in block ` +
      `${receipt.blockNumber}. Whoever requested it knows your password: change it now with chat passwd.`,
  );
}
