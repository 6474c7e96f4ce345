import { ChatError } from "../protocol/errors";
import type { z } from "zod";
import type { TransactionResponse } from "../protocol/wire";
import type { RegistryReader } from "../client-core/chain-reader";
import type { Context } from "./context";

/**
 * The common tail of `rotate-key` and `reset`: keep the new key on disk as pending (so that a crash after
 * the transaction cannot lose it), submit the change through the relay, and confirm the key only once the
 * chain itself names it as current. A refused change drops the pending key; an unreachable relay keeps it,
 * since the transaction may still have landed.
 */
export async function submitKeyChange(params: {
  ctx: Pick<Context, "keys" | "out">;
  registry: RegistryReader;
  username: string;
  index: number;
  privateKey: string;
  password: string;
  waitingFor: string;
  submit: () => Promise<z.infer<typeof TransactionResponse>>;
}): Promise<z.infer<typeof TransactionResponse>> {
  const { ctx, registry, username, index } = params;
  const local = await ctx.out.progress(
    "encrypting the new key (scrypt)",
    ctx.keys.store({ username, index, privateKey: params.privateKey, password: params.password, pending: true }),
  );
  let receipt;
  try {
    receipt = await ctx.out.progress(params.waitingFor, params.submit(), { transaction: true });
  } catch (error) {
    if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") ctx.keys.dropPending(username, index);
    throw error;
  }
  const onChain = await registry.currentKey(username);
  if (onChain.index !== index || onChain.address !== local.address) {
    throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain's current key is not the new key`);
  }
  ctx.keys.confirm(username, index);
  return receipt;
}
