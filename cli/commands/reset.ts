import { ChatError } from "../../protocol/errors";
import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { assertUsername } from "../../protocol/username";
import { TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, type LoginDeps } from "../auth";
import type { Context } from "../context";
import { submitKeyChange } from "../key-change";
import { newPrivateKey } from "../keystore";

/**
 * chat reset USER: the lost-device path. A new key on this device, proven by the password (the relay
 * checks the credential and submits resetKey); peers are warned of the reset.
 */
export async function reset(
  ctx: LoginDeps & Pick<Context, "registry" | "keys" | "out" | "passwords" | "credential" | "deadline">,
  rawUsername: string): Promise<void> {
  const username = assertUsername(rawUsername);
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  if (!(await registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const credential = await ctx.credential(username, password);
  const index = await registry.keyCount(username);
  const privateKey = newPrivateKey();
  const newPublicKey = publicKeyOf(privateKey);
  const nonce = await registry.nonce(username);
  const deadline = await ctx.deadline();
  const newKeySignature = signRegistryTypedData({
    privateKey,
    domain: registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress }),
    data: { primaryType: "ResetKey", message: { username, newPublicKey, nonce, deadline: BigInt(deadline) } },
  });
  const receipt = await submitKeyChange({
    ctx,
    registry,
    username,
    index,
    privateKey,
    password,
    waitingFor: `resetting ${username}'s key: waiting for the transaction's block`,
    submit: () => ctx.relay.post("/v1/reset", { username, credential, newPublicKey, deadline, newKeySignature }, TransactionResponse),
  });
  await loginWithKeys({ ctx, username, credential, keys: [{ index, privateKey }] });
  ctx.out.data(
    { type: "reset", username, keyIndex: index, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash, fingerprint: keyFingerprint(newPublicKey) },
    `Reset ${username}'s key to key ${index} in block ${receipt.blockNumber} and logged in. Your contacts will be warned. New fingerprint: ${keyFingerprint(newPublicKey)}`,
  );
}
