import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { CredentialHashResponse, TransactionResponse } from "../../protocol/wire";
import { loginWithKeys, unlockCurrentKeys, type UnlockDeps } from "../auth";
import type { Context } from "../context";
import { requireSession } from "../session";

/**
 * chat passwd: a new password: new credential hash on chain (signed by the current key), keystores
 * re-encrypted. The change ends every session of the user on the relay (tokens are bound to the credential),
 * so this device logs in again with the new password; other devices must log in again too.
 */
export async function passwd(
  ctx: UnlockDeps & Pick<Context, "sessions" | "relay" | "deployment" | "passwords" | "credential" | "deadline">,
): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  const username = session.username;
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  const oldPassword = await ctx.passwords.password(`Current password for ${username}: `);
  const keys = await unlockCurrentKeys(ctx, username, oldPassword);
  const [current] = keys;
  const newPassword = await ctx.passwords.newPassword();
  const credential = await ctx.credential(username, newPassword);
  // The relay gives a registered user's credential hash only to that user's own session.
  const { credentialHash } = await ctx.relay.post("/v1/credential-hash", { username, credential }, CredentialHashResponse, { token: session.token });
  const nonce = await registry.nonce(username);
  const deadline = await ctx.deadline();
  const signature = signRegistryTypedData({
    privateKey: current.privateKey,
    domain: registryDomain({ chainId: deployment.chainId, verifyingContract: deployment.contractAddress }),
    data: { primaryType: "UpdateCredential", message: { username, credentialHash, nonce, deadline: BigInt(deadline) } },
  });
  const receipt = await ctx.out.progress(
    "changing the password: waiting for the transaction's block",
    ctx.relay.post("/v1/credential", { username, credential, deadline, signature }, TransactionResponse),
    { transaction: true },
  );
  // Re-encrypt every local key with the new password.
  for (const key of ctx.keys.localKeys(username).filter((k) => !k.pending)) {
    const unlocked = await ctx.keys.unlock(username, key.index, oldPassword);
    await ctx.keys.store({ username, index: key.index, privateKey: unlocked.privateKey, password: newPassword, pending: false });
  }
  // The change ended this session too: log in again with the new password.
  await loginWithKeys({ ctx, username, credential, keys });
  ctx.out.data(
    { type: "passwd", username, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash },
    `Changed ${username}'s password (block ${receipt.blockNumber}); the keys on this device are re-encrypted with it; other sessions are logged out.`,
  );
}
