import { ChatError } from "../../protocol/errors";
import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { assertUsername } from "../../protocol/username";
import { ResetResponse } from "../../protocol/wire";
import { loginWithKeys, type LoginDeps } from "../auth";
import type { Context } from "../context";
import { newPrivateKey } from "../keystore";
import { checkOwnAccount, isoTime, timeLeft } from "../own-account";
import { publishDevice, type MlsChatDeps } from "../mls/chat";

type ResetDeps = LoginDeps & MlsChatDeps & Pick<Context, "registry" | "chain" | "keys" | "out" | "passwords" | "credential" | "deadline">;

/**
 * chat reset USER: the lost-device path, time-locked. The first run makes a new key on this device and asks
 * the relay (which checks the password) to request a reset on chain; the key becomes current only after the
 * contract's delay, during which any device holding the current key can cancel it (chat cancel-reset): a
 * stolen password alone cannot take an account whose owner still has a device. The reset is completed on
 * chain once due (by the relay, or anyone); running `chat reset USER` again then logs in with the new key.
 */
export async function reset(ctx: ResetDeps, rawUsername: string): Promise<void> {
  const username = assertUsername(rawUsername);
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  if (!(await registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
  await checkOwnAccount(ctx, username);
  const [current, pending] = await Promise.all([registry.currentKey(username), registry.pendingReset(username)]);
  const waiting = ctx.keys.localKeys(username).filter((key) => key.pending);

  // A reset this device requested earlier has completed: the chain names its key current.
  const completed = waiting.find((key) => key.index === current.index && key.address === current.address);
  if (completed) {
    const password = await ctx.passwords.password(`Password for ${username}: `);
    const unlocked = await ctx.out.progress("unlocking the keystore (scrypt)", ctx.keys.unlock(username, completed.index, password));
    ctx.keys.confirm(username, completed.index);
    const session = await loginWithKeys({ ctx, username, credential: await ctx.credential(username, password), keys: [unlocked] });
    await publishDevice(ctx, session);
    ctx.out.data(
      { type: "reset", status: "completed", username, keyIndex: completed.index, fingerprint: keyFingerprint(completed.publicKey) },
      `The reset of ${username} is complete: key ${completed.index} on this device is current, and you are logged in. ` +
        `Your contacts will be warned. Fingerprint: ${keyFingerprint(completed.publicKey)}`,
    );
    return;
  }

  const chainTime = await (await ctx.chain()).latestTimestamp();
  // A reset this device requested is still waiting for its delay (or for someone to complete it).
  const ours = pending && waiting.find((key) => key.address === pending.address);
  if (pending && ours) {
    const due = pending.effectiveAt <= chainTime;
    ctx.out.data(
      { type: "reset", status: "pending", username, keyIndex: ours.index, effectiveAt: pending.effectiveAt, fingerprint: keyFingerprint(ours.publicKey) },
      due
        ? `The reset of ${username} to this device's key is due since ${isoTime(pending.effectiveAt)}; the relay completes it shortly. Run chat reset ${username} again in a minute.`
        : `The reset of ${username} to this device's key is pending until ${isoTime(pending.effectiveAt)} (${timeLeft(pending.effectiveAt - chainTime)}). ` +
            `Run chat reset ${username} again after that to log in.`,
    );
    return;
  }
  if (pending) {
    throw new ChatError(
      "RESET_PENDING",
      `a reset of ${username} to another device's key is already pending until ${isoTime(pending.effectiveAt)}; only one may be pending`,
    );
  }

  const password = await ctx.passwords.password(`Password for ${username}: `);
  const credential = await ctx.credential(username, password);
  // The index the key gets if the reset completes with no other key change before it (a rotation cancels it).
  const index = current.index + 1;
  const privateKey = newPrivateKey();
  const newPublicKey = publicKeyOf(privateKey);
  const nonce = await registry.nonce(username);
  const deadline = await ctx.deadline();
  const newKeySignature = signRegistryTypedData({
    privateKey,
    domain: registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress }),
    data: { primaryType: "ResetKey", message: { username, newPublicKey, nonce, deadline: BigInt(deadline) } },
  });
  // Kept on disk as pending first, so that a crash after the transaction cannot lose the key.
  const local = await ctx.out.progress("encrypting the new key (scrypt)", ctx.keys.store({ username, index, privateKey, password, pending: true }));
  let receipt;
  try {
    receipt = await ctx.out.progress(
      `requesting a reset of ${username}: waiting for the transaction's block`,
      ctx.relay.post("/v1/reset", { username, credential, newPublicKey, deadline, newKeySignature }, ResetResponse),
      { transaction: true },
    );
  } catch (error) {
    // An unreachable relay keeps the key: the request may still have landed.
    if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") ctx.keys.dropPending(username, index);
    throw error;
  }
  // The chain, not the relay, says what is pending.
  const onChain = await registry.pendingReset(username);
  if (!onChain || onChain.address !== local.address) {
    throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain's pending reset is not this device's new key`);
  }
  const after = await (await ctx.chain()).latestTimestamp();
  ctx.out.data(
    {
      type: "reset",
      status: "requested",
      username,
      keyIndex: index,
      blockNumber: receipt.blockNumber,
      transactionHash: receipt.transactionHash,
      effectiveAt: onChain.effectiveAt,
      fingerprint: keyFingerprint(newPublicKey),
    },
    `Requested a reset of ${username} in block ${receipt.blockNumber}. For your safety it takes effect only at ` +
      `${isoTime(onChain.effectiveAt)} (${timeLeft(onChain.effectiveAt - after)}): until then any device that still holds ` +
      `${username}'s current key sees it and can cancel it. After that, run chat reset ${username} again on this device to log in. ` +
      `Your contacts will be warned. New fingerprint: ${keyFingerprint(newPublicKey)}`,
  );
}
