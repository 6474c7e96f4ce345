import { ChatError } from "../../protocol/errors";
import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, unlockCurrentKeys } from "../auth";
import type { Context } from "../context";
import { confirmKey, dropPendingKey, newPrivateKey, storeKey } from "../keystore";
import { requireSession } from "../session";

/** chat rotate-key: a new key, authorised on chain by the current key's EIP-712 signature. */
export async function rotateKey(ctx: Context): Promise<void> {
  const session = requireSession(ctx.home, ctx.relay.origin);
  const username = session.username;
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  const password = await ctx.passwords.password(`Password for ${username}: `);
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
  const local = await ctx.out.progress(
    "encrypting the new key (scrypt)",
    storeKey({ home: ctx.home, username, index, privateKey, password, fastKdf: ctx.insecureFastKdf, pending: true }),
  );
  let receipt;
  try {
    receipt = await ctx.out.progress(
      "rotating: waiting for the transaction's block",
      ctx.relay.post("/v1/rotate", { username, newPublicKey, deadline, currentKeySignature, newKeySignature }, TransactionResponse),
      { transaction: true },
    );
  } catch (error) {
    if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") dropPendingKey(ctx.home, username, index);
    throw error;
  }
  const onChain = await registry.currentKey(username);
  if (onChain.index !== index || onChain.address !== local.address) {
    throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain's current key is not the new key`);
  }
  confirmKey(ctx.home, username, index);
  // A fresh session bound to the new key (the old token names the old key index).
  const credential = await ctx.credential(username, password);
  await loginWithKeys({ ctx, username, credential, keys: [{ index, privateKey }, current, ...older].slice(0, 3) });
  ctx.out.data(
    { type: "rotated", username, keyIndex: index, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash, fingerprint: keyFingerprint(newPublicKey) },
    `Rotated ${username}'s key to key ${index} in block ${receipt.blockNumber}. New fingerprint: ${keyFingerprint(newPublicKey)}`,
  );
}
