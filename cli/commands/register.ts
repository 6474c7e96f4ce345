import { ChatError } from "../../protocol/errors";
import { signRegistryTypedData, registryDomain } from "../../protocol/eip712";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { CredentialHashResponse, TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, type LoginDeps } from "../auth";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { newPrivateKey } from "../keystore";
import { publishDevice, type MlsChatDeps } from "../mls/chat";

/** chat register USER: a new key on this device, its registration on chain (through the relay), then login. */
export async function register(
  ctx: LoginDeps & MlsChatDeps & Pick<Context, "registry" | "keys" | "out" | "passwords" | "credential" | "deadline">,
  rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  if (await registry.isRegistered(username)) throw new ChatError("USERNAME_TAKEN", `username taken: ${username}`);
  const password = await ctx.passwords.newPassword();
  const credential = await ctx.credential(username, password);
  const { credentialHash } = await ctx.relay.post("/v1/credential-hash", { username, credential }, CredentialHashResponse);
  const privateKey = newPrivateKey();
  const publicKey = publicKeyOf(privateKey);
  const deadline = await ctx.deadline();
  const signature = signRegistryTypedData({
    privateKey,
    domain: registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress }),
    data: { primaryType: "Register", message: { username, credentialHash, publicKey, nonce: 0n, deadline: BigInt(deadline) } },
  });
  // Saved before the transaction: if the answer is lost after the block, the key is not.
  const local = await ctx.out.progress(
    "encrypting the new key (scrypt)",
    ctx.keys.store({ username, index: 0, privateKey, password, pending: true }),
  );
  let receipt;
  try {
    receipt = await ctx.out.progress(
      `registering ${username}: waiting for the transaction's block`,
      ctx.relay.post("/v1/register", { username, credential, publicKey, deadline, signature }, TransactionResponse),
      { transaction: true },
    );
  } catch (error) {
    if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") ctx.keys.dropPending(username, 0);
    throw error;
  }
  // The relay's word is not enough: the chain must hold our key.
  const record = await registry.keyRecord(username, 0);
  if (record.address !== local.address) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain holds another key than the one registered here`);
  ctx.keys.confirm(username, 0);
  const session = await loginWithKeys({ ctx, username, credential, keys: [{ index: 0, privateKey }] });
  await publishDevice(ctx, session);
  ctx.out.data(
    { type: "registered", username, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash, fingerprint: keyFingerprint(publicKey) },
    `Registered ${username} in block ${receipt.blockNumber} and logged in. Your key's fingerprint: ${keyFingerprint(publicKey)}`,
  );
}
