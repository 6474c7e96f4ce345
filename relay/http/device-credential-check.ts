/**
 * The relay's check of a device credential, as strict as the clients' (protocol/mls/authentication-service.ts,
 * the "strict" policy): the identity bytes name this user, this deployment and this device's Ed25519 key,
 * and the EIP-191 signature recovers the user's current key, or the key a rotation replaced within the
 * grace period, never a key a reset replaced. The key history comes from the cache, confirmed by the
 * chain's key count; when the cache refuses or is behind, the chain decides, and the chain alone confirms
 * only the current key.
 */
import { ChatError } from "../../protocol/errors";
import { deviceAuthenticationService } from "../../protocol/mls/authentication-service";
import { decodeDeviceIdentity, type DeviceIdentity } from "../../protocol/mls/device-identity";
import type { KeyBook, KeyRecord } from "../../protocol/mls/key-book";
import type { HttpContext } from "./context";
import { fromStorage } from "./context";

function cacheKeyBook(ctx: HttpContext): KeyBook {
  return {
    async keyRecord(username, index) {
      const key = (await fromStorage(ctx.cache.getKeys(username))).find((k) => k.index === index);
      return key ? { address: key.address, kind: key.kind, timestamp: key.blockTime } : undefined;
    },
    async keyCount(username) {
      return (await fromStorage(ctx.cache.getKeys(username))).length;
    },
  };
}

/** Only the current key, straight from the contract. */
function chainKeyBook(ctx: HttpContext): KeyBook {
  return {
    async keyRecord(username, index): Promise<KeyRecord | undefined> {
      const current = await ctx.chain.currentKey(username);
      return current && current.index === index ? { address: current.address, kind: "rotated", timestamp: 0 } : undefined;
    },
    async keyCount(username) {
      return ctx.chain.keyCount(username);
    },
  };
}

/**
 * Decodes `identityBytes`, checks it authorises `devicePublicKey` for `username` by a key that stands now,
 * and returns the identity. Throws BAD_REQUEST (malformed, another user), KEY_UNVERIFIED (another
 * deployment, or a key that does not stand) or KEY_MISMATCH (signed by another key).
 */
export async function checkDeviceCredential(
  ctx: HttpContext,
  params: { username: string; devicePublicKey: Uint8Array; identityBytes: Uint8Array },
): Promise<DeviceIdentity> {
  const identity = decodeDeviceIdentity(params.identityBytes);
  if (identity.username !== params.username) {
    throw new ChatError("BAD_REQUEST", `the credential names ${identity.username}, not ${params.username}`, { field: "credential" });
  }
  const chainId = await ctx.chain.chainId();
  const credential = { credentialType: "basic" as const, identity: params.identityBytes };
  let refusal: { code: string; message: string } | null = null;
  const check = (keyBook: KeyBook) =>
    deviceAuthenticationService({
      keyBook,
      policy: "strict",
      chainId,
      contract: ctx.chain.contractAddress,
      now: () => Math.floor(ctx.clock() / 1000),
      onRefused: (reason) => (refusal = reason),
    }).validateCredential(credential, params.devicePublicKey);

  if (await check(cacheKeyBook(ctx))) {
    // The cache may not show a reset or rotation mined a moment ago: its yes stands only while the chain
    // has as many keys as the cache (a chain that cannot be reached leaves the cache's verdict).
    const cached = (await fromStorage(ctx.cache.getKeys(params.username))).length;
    const onChain = await ctx.chain.keyCount(params.username).catch(() => cached);
    if (onChain === cached) return identity;
    refusal = { code: "KEY_UNVERIFIED", message: `the relay's cache is behind the chain for ${params.username}` };
  }
  const cacheRefusal = refusal as { code: string; message: string } | null;
  // A signature or deployment problem is the credential's own: the chain cannot change that verdict.
  if (cacheRefusal?.code === "INVALID_SIGNATURE" || cacheRefusal?.code === "BAD_REQUEST") {
    throw new ChatError(cacheRefusal.code, `device credential refused: ${cacheRefusal.message}`, { field: "credential" });
  }
  if (cacheRefusal?.message.includes("names another")) {
    throw new ChatError("KEY_UNVERIFIED", `device credential refused: ${cacheRefusal.message}`, { field: "credential" });
  }
  refusal = null;
  let onChain = false;
  try {
    onChain = await check(chainKeyBook(ctx));
  } catch {
    // chain unreachable: the cache's refusal stands
  }
  if (onChain) return identity;
  const reason = cacheRefusal ?? { code: "KEY_UNVERIFIED", message: "not signed by a key of the user that stands" };
  throw new ChatError(reason.code === "KEY_MISMATCH" ? "KEY_MISMATCH" : "KEY_UNVERIFIED", `device credential refused: ${reason.message}`, {
    field: "credential",
  });
}
