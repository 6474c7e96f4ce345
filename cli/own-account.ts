/**
 * The owner's self-check: before a command talks to the relay, read this user's state ON CHAIN (the
 * client's own RPC, never the relay) and say at once, loudly, if a reset is pending to a key this device
 * does not hold, or if the current key is not one of this device's keys. A stolen password can start a
 * reset; only the owner's current key can stop it, and only while the delay runs, so the owner must learn
 * of it at the first command, with the one command that cancels it.
 */
import { ChatError } from "../protocol/errors";
import type { Context } from "./context";

export type OwnAccountDeps = Pick<Context, "registry" | "chain" | "keys" | "out">;

export interface OwnAccountState {
  /** a reset requested on chain and not yet effective or cancelled */
  pendingReset: { address: string; effectiveAt: number; toThisDevice: boolean } | null;
  currentKey: { index: number; address: string; onThisDevice: boolean };
  /** the warnings shown (codes OWN_RESET_PENDING, OWN_KEY_REPLACED) */
  warnings: { code: string; message: string }[];
}

export function isoTime(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(".000Z", "Z");
}

export function timeLeft(seconds: number): string {
  if (seconds <= 0) return "now";
  if (seconds < 120) return `in ${seconds} s`;
  if (seconds < 7200) return `in ${Math.round(seconds / 60)} min`;
  return `in ${Math.round(seconds / 3600)} h`;
}

/**
 * Checks `username` on chain against this device's keys and warns. A device with no key of the user (a fresh
 * one) has nothing to compare and stays quiet. An unreachable chain is a note, not a failure: the command's
 * own chain checks decide whether it may go on.
 */
export async function checkOwnAccount(ctx: OwnAccountDeps, username: string): Promise<OwnAccountState | null> {
  const local = ctx.keys.localKeys(username);
  if (local.length === 0) return null;
  let current: { index: number; address: string };
  let pending: { address: string; effectiveAt: number } | null;
  let chainTime: number;
  try {
    const registry = await ctx.registry();
    [current, pending, chainTime] = await Promise.all([
      registry.currentKey(username),
      registry.pendingReset(username),
      ctx.chain().then((chain) => chain.latestTimestamp()),
    ]);
  } catch (error) {
    if (error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE") {
      ctx.out.info(`note: could not check ${username} on chain (${error.message})`, { always: true });
      return null;
    }
    throw error;
  }
  const confirmed = local.filter((key) => !key.pending);
  const warnings: { code: string; message: string }[] = [];
  const toThisDevice = !!pending && local.some((key) => key.address === pending!.address);
  const onThisDevice = local.some((key) => key.address === current.address);
  if (pending && !toThisDevice) {
    const warning = {
      code: "OWN_RESET_PENDING",
      user: username,
      pendingKey: pending.address,
      effectiveAt: isoTime(pending.effectiveAt),
      message:
        `A RESET of your account ${username} to a key that is NOT on this device is pending on chain: it takes effect at ` +
        `${isoTime(pending.effectiveAt)} (${timeLeft(pending.effectiveAt - chainTime)}). If you did not request it, someone knows your ` +
        `password: run \`chat cancel-reset\` NOW from this device, then change your password (chat passwd).`,
    };
    ctx.out.warn(warning, true);
    warnings.push(warning);
  }
  if (!onThisDevice && confirmed.length > 0) {
    const warning = {
      code: "OWN_KEY_REPLACED",
      user: username,
      keyIndex: current.index,
      message:
        `Your account ${username}'s current key on chain (key ${current.index}) is NOT one of this device's keys: it was changed from ` +
        `another device or by a reset. If that was not you, your account is taken over: messages to ${username} now go to that key. ` +
        `A reset still pending could be stopped with \`chat cancel-reset\`; once complete only a reset with your password can take it back.`,
    };
    ctx.out.warn(warning, true);
    warnings.push(warning);
  }
  return {
    pendingReset: pending ? { ...pending, toThisDevice } : null,
    currentKey: { ...current, onThisDevice },
    warnings,
  };
}
