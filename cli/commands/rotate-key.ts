import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, unlockCurrentKeys, type LoginDeps, type UnlockDeps } from "../auth";
import type { Context } from "../context";
import { submitKeyChange } from "../key-change";
import { newPrivateKey } from "../keystore";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsDevice } from "../../client-core/mls-device";
import { DsClient } from "../mls/ds-client";
import { requireSession, type Session } from "../session";
import { ChatError } from "../../protocol/errors";
import { homeDeviceStorage, homeHasDevice } from "../mls/device-files";

/** chat rotate-key: a new key, authorised on chain by the current key's EIP-712 signature. */
export type RotateDeps = LoginDeps & UnlockDeps & Pick<Context, "passwords" | "credential" | "deadline" | "home">;

export async function rotateKey(ctx: RotateDeps): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  if (session.linked) throw new ChatError("USAGE", "this is a linked device: it holds no identity key; rotate the key on a device that does");
  const password = await ctx.passwords.password(`Password for ${session.username}: `);
  const rotated = await rotateIdentityKey(ctx, session.username, password);
  if (homeHasDevice(ctx.home, session.username)) await reauthorizeMlsDevice(ctx, rotated.session);
}

/**
 * Replaces `username`'s identity key on chain (one transaction, signed by the current key and the new one)
 * and logs in with the new key; says so. Shared by rotate-key and device revoke.
 */
export async function rotateIdentityKey(ctx: RotateDeps, username: string, password: string): Promise<{ session: Session; keyIndex: number; blockNumber: number }> {
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  const [current, ...older] = await unlockCurrentKeys(ctx, username, password);
  const index = current.index + 1;
  const privateKey = newPrivateKey();
  const newPublicKey = publicKeyOf(privateKey);
  const nonce = await registry.nonce(username);
  const deadline = await ctx.deadline();
  const domain = registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress });
  const data = { primaryType: "RotateKey" as const, message: { username, newPublicKey, nonce, deadline: BigInt(deadline) } };
  const currentKeySignature = signRegistryTypedData({ privateKey: current.privateKey, domain, data });
  const newKeySignature = signRegistryTypedData({ privateKey, domain, data });
  const receipt = await submitKeyChange({
    ctx,
    registry,
    username,
    index,
    privateKey,
    password,
    waitingFor: "rotating: waiting for the transaction's block",
    submit: () => ctx.relay.post("/v1/rotate", { username, newPublicKey, deadline, currentKeySignature, newKeySignature }, TransactionResponse),
  });
  // A fresh session bound to the new key (the old token names the old key index).
  const credential = await ctx.credential(username, password);
  const fresh = await loginWithKeys({ ctx, username, credential, keys: [{ index, privateKey }, current, ...older].slice(0, 3) });
  ctx.out.data(
    { type: "rotated", username, keyIndex: index, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash, fingerprint: keyFingerprint(newPublicKey) },
    `Rotated ${username}'s key to key ${index} in block ${receipt.blockNumber}. New fingerprint: ${keyFingerprint(newPublicKey)}`,
  );
  return { session: fresh, keyIndex: index, blockNumber: receipt.blockNumber };
}

/**
 * The MLS device of this home follows the rotation: its credential re-signed by the new key, its key
 * packages replaced, a commit in each group (MlsDevice.reauthorize). The rotation is done on chain by now,
 * so a failure here is a warning; the device's next sync finishes the job.
 */
export async function reauthorizeMlsDevice(ctx: RotateDeps, session: Session): Promise<number> {
  const warn = (message: string) =>
    ctx.out.warn({ code: "MLS_REAUTHORIZE_FAILED", message: `${message}; the key rotation itself is done, and the next sync of this device retries` });
  try {
    const deployment = await ctx.deployment();
    const registry = await ctx.registry();
    const device = await MlsDevice.open({
      storage: homeDeviceStorage(ctx.home, session.username),
      username: session.username,
      identityKeys: session.keys,
      chainId: deployment.chainId,
      contract: deployment.contractAddress,
      keyBook: chainKeyBook(registry),
      connect: (deviceId) => new DsClient({ url: ctx.relay.url.origin, token: session.token, deviceId, tls: () => ctx.relay.tls() }),
    });
    const { keyIndex, events } = await device.reauthorize();
    let done = 0;
    for (const event of events) {
      if (event.kind === "reauthorized") done++;
      else if (event.kind === "key-change-failed") warn(`this device could not re-authorise itself in group ${event.groupId} (${event.code}: ${event.message})`);
    }
    ctx.out.info(`This device's messaging key is now authorised by key ${keyIndex}; updated in ${done} group(s).`);
    return done;
  } catch (error) {
    warn(`this device's messaging key could not be re-authorised (${error instanceof Error ? error.message : String(error)})`);
    return 0;
  }
}
