import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { CredentialHashResponse, TransactionResponse } from "../../protocol/wire";
import { unlockCurrentKeys } from "../auth";
import type { Context } from "../context";
import { readIdentity, storeKey, unlockKey } from "../keystore";
import { requireSession } from "../session";

/** chat passwd: a new password: new credential hash on chain (signed by the current key), keystores re-encrypted. */
export async function passwd(ctx: Context): Promise<void> {
  const session = requireSession(ctx.home, ctx.relay.origin);
  const username = session.username;
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  const oldPassword = await ctx.passwords.password(`Current password for ${username}: `);
  const [current] = await unlockCurrentKeys(ctx, username, oldPassword);
  const newPassword = await ctx.passwords.newPassword();
  const credential = await ctx.credential(username, newPassword);
  const { credentialHash } = await ctx.relay.post("/v1/credential-hash", { username, credential }, CredentialHashResponse);
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
  for (const key of readIdentity(ctx.home, username).keys.filter((k) => !k.pending)) {
    const unlocked = await unlockKey({ home: ctx.home, username, index: key.index, password: oldPassword });
    await storeKey({ home: ctx.home, username, index: key.index, privateKey: unlocked.privateKey, password: newPassword, fastKdf: ctx.insecureFastKdf, pending: false });
  }
  ctx.out.data(
    { type: "passwd", username, blockNumber: receipt.blockNumber, transactionHash: receipt.transactionHash },
    `Changed ${username}'s password (block ${receipt.blockNumber}); the keys on this device are re-encrypted with it.`,
  );
}
