import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, unlockCurrentKeys, type LoginDeps, type UnlockDeps } from "../auth";
import type { Context } from "../context";
import { submitKeyChange } from "../key-change";
import { newPrivateKey } from "../keystore";
import { requireSession } from "../session";

/** chat rotate-key: a new key, authorised on chain by the current key's EIP-712 signature. */
export async function rotateKey(ctx: LoginDeps & UnlockDeps & Pick<Context, "passwords" | "credential" | "deadline">): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
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
  await loginWithKeys({ ctx, username, credential, keys: [{ index, privateKey }, current, ...older].slice(0, 3) });
  ctx.out.data(
    { type: "rotated", username, keyIndex: index, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash, fingerprint: keyFingerprint(newPublicKey) },
    `Rotated ${username}'s key to key ${index} in block ${receipt.blockNumber}. New fingerprint: ${keyFingerprint(newPublicKey)}`,
  );
}
