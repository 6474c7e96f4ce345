/**
 * Logging in (shared by login, register, reset and rotate-key): a fresh challenge from the relay,
 * signed with the current key as an EIP-191 personal message over protocol/wire's loginMessage, sent
 * with the argon2id credential; the session token and the unlocked keys go to the session store.
 */
import { Wallet } from "ethers";
import { ChallengeResponse, LoginResponse, loginMessage } from "../protocol/wire";
import { DeviceLoginResponse, deviceLoginText } from "../protocol/wire-devices";
import { decodeBase64, encodeBase64 } from "../protocol/wire-v2";
import { ChatError } from "../protocol/errors";
import type { Context } from "./context";
import type { UnlockedKey } from "./keystore";
import type { Session } from "./session";

export type LoginDeps = Pick<Context, "deployment" | "relay" | "sessions">;
export type UnlockDeps = Pick<Context, "registry" | "keys" | "out">;

/** How many older keys a login unlocks too (to read messages still sealed to them). */
const OLDER_KEYS_UNLOCKED = 1;

export async function loginWithKeys(params: {
  ctx: LoginDeps;
  username: string;
  credential: string;
  /** current key first */
  keys: UnlockedKey[];
}): Promise<Session> {
  const { ctx, username, credential, keys } = params;
  const deployment = await ctx.deployment();
  const { challenge } = await ctx.relay.post("/v1/login/challenge", { username }, ChallengeResponse);
  const message = loginMessage({
    username,
    challenge,
    chainId: deployment.chainId.toString(),
    contractAddress: deployment.contractAddress,
  });
  const signature = await new Wallet(keys[0].privateKey).signMessage(message);
  const login = await ctx.relay.post("/v1/login", { username, credential, challenge, signature }, LoginResponse);
  if (login.keyIndex !== keys[0].index) {
    throw new ChatError("WRONG_KEY", `the relay logged ${username} in with key ${login.keyIndex}, this device holds key ${keys[0].index}`);
  }
  const session: Session = {
    relay: ctx.relay.origin,
    username,
    token: login.token,
    expiresAt: login.expiresAt,
    keyIndex: login.keyIndex,
    keys,
  };
  ctx.sessions.write(session);
  return session;
}

/**
 * A linked device's login (it holds no identity key): a fresh challenge, signed with the device's own
 * Ed25519 key over protocol/wire-devices' deviceLoginText, sent with the newest credential it holds. The
 * relay answers with a session bound to this device and the credential that stood (newer than the one
 * sent when a device holding the identity key re-authorised this one meanwhile). The session keeps the
 * device secret that opens this device's MLS state, and no identity key.
 */
export async function loginWithDevice(params: {
  ctx: LoginDeps;
  username: string;
  deviceId: string;
  credential: Uint8Array;
  deviceSecret: Uint8Array;
  sign: (text: string) => Promise<Uint8Array>;
}): Promise<{ session: Session; credential: Uint8Array }> {
  const { ctx, username, deviceId } = params;
  const deployment = await ctx.deployment();
  const { challenge } = await ctx.relay.post("/v1/login/challenge", { username }, ChallengeResponse);
  const text = deviceLoginText({ username, challenge, chainId: deployment.chainId, contract: deployment.contractAddress, deviceId });
  const signature = Buffer.from(await params.sign(text)).toString("hex");
  const login = await ctx.relay.post("/v1/login/device", { username, deviceId, credential: encodeBase64(params.credential), challenge, signature }, DeviceLoginResponse);
  if (login.deviceId !== deviceId) throw new ChatError("LOGIN_FAILED", `the relay logged in device ${login.deviceId}, not this device ${deviceId}`);
  const session: Session = {
    relay: ctx.relay.origin,
    username,
    token: login.token,
    expiresAt: login.expiresAt,
    keyIndex: login.keyIndex,
    keys: [],
    linked: { deviceId, deviceSecret: Buffer.from(params.deviceSecret).toString("hex") },
  };
  ctx.sessions.write(session);
  return { session, credential: decodeBase64(login.credential) };
}

/** Unlocks the user's current key (index from the chain) and the one before it, with the password. */
export async function unlockCurrentKeys(ctx: UnlockDeps, username: string, password: string): Promise<UnlockedKey[]> {
  const registry = await ctx.registry();
  if (!(await registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
  const current = await registry.currentKey(username);
  const local = ctx.keys.localKeys(username).filter((key) => !key.pending);
  const mine = local.find((key) => key.index === current.index);
  if (!mine) {
    const hint = local.length > 0 ? `its key changed on chain to key ${current.index} from another device` : "this device has no key of it";
    throw new ChatError("WRONG_KEY", `cannot log in as ${username}: ${hint}; to move ${username} to this device run: chat reset ${username}`);
  }
  if (mine.address !== current.address) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the local key ${current.index} is not the one on chain`);
  const keys = [await ctx.out.progress("unlocking the keystore (scrypt)", ctx.keys.unlock(username, current.index, password))];
  for (const older of local.filter((key) => key.index < current.index).slice(-OLDER_KEYS_UNLOCKED)) {
    keys.push(await ctx.keys.unlock(username, older.index, password));
  }
  return keys;
}
