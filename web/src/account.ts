/**
 * The account flows of the browser client, the same as the `chat` CLI's (register, login, logout, rotate
 * key, the owner's pending-reset check and its cancellation, linking this browser as a device), over the
 * relay that served the page, with every key checked on the user's own chain (settings.ts).
 *
 * The MLS half (re-authorising the device after a rotation, creating and opening a linked device's MLS
 * state) belongs to the messaging engine: it comes in through AccountHooks.
 */
import { Wallet } from "ethers";
import { bytesToHex, randomBytes } from "../../protocol/bytes";
import { CREDENTIAL_ARGON2_PARAMS, deriveCredential } from "../../protocol/credential-derive";
import { registryDomain, signRegistryTypedData } from "../../protocol/eip712";
import { ChatError } from "../../protocol/errors";
import { keyFingerprint, publicKeyOf } from "../../protocol/keys";
import { generateDeviceSignatureKey } from "../../protocol/mls/device-signature-key";
import { mlsCipherSuite } from "../../protocol/mls/suite";
import { assertUsername } from "../../protocol/username";
import {
  ChallengeResponse,
  CredentialHashResponse,
  LoginResponse,
  LogoutResponse,
  TransactionResponse,
  loginMessage,
} from "../../protocol/wire";
import {
  CreateDeviceLinkResponse,
  DeviceLinkStatusResponse,
  DeviceLoginResponse,
  DeviceName,
  deviceFingerprint,
  deviceLoginText,
} from "../../protocol/wire-devices";
import { decodeBase64, encodeBase64 } from "../../protocol/wire-v2";
import type { RegistryReader } from "../../client-core/chain-reader";
import { closeKeystore, confirmKey, dropPendingKey, linkedDevice, localKeys, newPrivateKey, storeKey, storeLinkedDevice, unlockDeviceSecret, unlockKey, updateLinkedCredential, type UnlockedKey } from "./keystore";
import { deleteAllDatabases } from "./idb";
import type { RelayApi } from "./relay-api";
import type { Deployment } from "./settings";

/** How many older keys a login unlocks too (to read messages still sealed to them), as the CLI. */
const OLDER_KEYS_UNLOCKED = 1;
/** How often a waiting new device asks whether it was approved. */
const LINK_POLL_MS = 1500;
/** localStorage keys of the app that are session data (logout removes them; settings stay). */
export const SESSION_STORAGE_PREFIX = "eth-chat:session";

/**
 * A logged-in session, as the messaging engine receives it (openMessenger). Secrets live in memory only.
 * A browser holding the identity key has `identityKeys` (current first); a linked browser has none and
 * carries `linked` instead.
 */
export interface Session {
  username: string;
  token: string;
  expiresAt: number;
  /** the identity key index the session is bound to */
  keyIndex: number;
  /** the relay's origin (the page's own): HTTP and WebSocket calls go there */
  relayOrigin: string;
  chainId: bigint;
  /** lowercase 0x hex */
  contract: string;
  /** the user's own chain: every key check goes through it */
  registry: RegistryReader;
  /** current first; empty for a linked browser */
  identityKeys: UnlockedKey[];
  linked?: {
    deviceId: string;
    /** opens this device's MLS state */
    deviceSecret: Uint8Array;
    /** the newest device credential the relay holds for it */
    credential: Uint8Array;
  };
}

/** What the MLS engine needs to build a linked device's state: the approval's parts and the secret that seals it. */
export interface LinkedDeviceParts {
  username: string;
  deviceId: string;
  deviceSecret: Uint8Array;
  signatureKey: { publicKey: Uint8Array; signKey: Uint8Array };
  credential: Uint8Array;
  keyIndex: number;
  chainId: bigint;
  contract: string;
  registry: RegistryReader;
}

/** The MLS half of the account flows, supplied by the messaging engine (web/src/messenger.ts). */
export interface AccountHooks {
  /** After a rotation: re-sign this browser's MLS credential with the new key and update its groups. */
  afterRotation?(session: Session): Promise<void>;
  /** After a link approval: create this browser's MLS device state (MlsDevice.createLinked). */
  createLinked?(parts: LinkedDeviceParts): Promise<void>;
  /** At a linked browser's login: open its MLS state and sign the device login text with its Ed25519 key. */
  openLinked?(params: { username: string; deviceId: string; deviceSecret: Uint8Array; chainId: bigint; contract: string; registry: RegistryReader }): Promise<{
    signText(text: string): Promise<Uint8Array>;
  }>;
}

/** A short progress text while a slow step runs (scrypt, argon2id, a block), null when it ends. */
export type ProgressReporter = (text: string | null) => void;

export interface OwnAccountState {
  username: string;
  pendingReset: { address: string; effectiveAt: number; toThisBrowser: boolean } | null;
  currentKey: { index: number; address: string; onThisBrowser: boolean };
  /** the chain's clock, Unix seconds */
  chainTime: number;
  /** whether this browser holds the current key, and so can cancel a reset */
  canCancel: boolean;
}

export interface LinkRequest {
  code: string;
  /** this browser's device fingerprint, to compare on the approving device */
  fingerprint: string;
  expiresAt: number;
  /** waits for the approval, then creates the device and logs in */
  completed: Promise<{ session: Session; warning?: string }>;
  cancel(): void;
}

export interface RotationResult {
  session: Session;
  keyIndex: number;
  blockNumber: number;
  fingerprint: string;
  /** set when the key rotated on chain but this browser's messaging device could not follow yet */
  warning?: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function describe(error: unknown): string {
  return error instanceof ChatError ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
}

/** Remembers who is logged in (not the keys), so that a reloaded page can still end the session at logout. */
function rememberSession(session: Session): void {
  localStorage.setItem(SESSION_STORAGE_PREFIX, JSON.stringify({ username: session.username, token: session.token, expiresAt: session.expiresAt }));
}

export function rememberedSession(): { username: string; token: string; expiresAt: number } | undefined {
  try {
    const value = JSON.parse(localStorage.getItem(SESSION_STORAGE_PREFIX) ?? "null") as { username?: unknown; token?: unknown; expiresAt?: unknown } | null;
    if (value && typeof value.username === "string" && typeof value.token === "string" && typeof value.expiresAt === "number") {
      return { username: value.username, token: value.token, expiresAt: value.expiresAt };
    }
  } catch {
    // a damaged entry is as good as none
  }
  return undefined;
}

export class Account {
  constructor(
    private readonly relay: RelayApi,
    readonly deployment: Deployment,
    private readonly hooks: AccountHooks = {},
    private readonly progress: ProgressReporter = () => undefined,
  ) {}

  private get registry(): RegistryReader {
    return this.deployment.registry;
  }

  private async step<T>(text: string, work: Promise<T> | (() => Promise<T>)): Promise<T> {
    this.progress(text);
    try {
      return await (typeof work === "function" ? work() : work);
    } finally {
      this.progress(null);
    }
  }

  /** A progress callback for scrypt that shows its percentage. */
  private scryptProgress(text: string): (fraction: number) => void {
    let shown = -1;
    return (fraction) => {
      const percent = Math.floor(fraction * 100);
      if (percent >= shown + 5 || percent === 100) {
        shown = percent;
        this.progress(`${text}: ${percent}%`);
      }
    };
  }

  private domain() {
    return registryDomain({ chainId: this.deployment.chainId, verifyingContract: this.deployment.contract });
  }

  /** The credential of `username` (argon2id with the production parameters, salt bound to this deployment). */
  private credential(username: string, password: string): Promise<string> {
    return this.step(
      "deriving the credential (argon2id)",
      deriveCredential({ password, username, chainId: this.deployment.chainId, contractAddress: this.deployment.contract, argon2: CREDENTIAL_ARGON2_PARAMS }),
    );
  }

  /** Deadline of a signature: an hour after the chain's latest block time. */
  private async deadline(): Promise<number> {
    const chainTime = await this.deployment.chain.latestTimestamp();
    return Math.max(chainTime, Math.floor(Date.now() / 1000)) + 3600;
  }

  private session(username: string, login: { token: string; expiresAt: number; keyIndex: number }, keys: UnlockedKey[], linked?: Session["linked"]): Session {
    const session: Session = {
      username,
      token: login.token,
      expiresAt: login.expiresAt,
      keyIndex: login.keyIndex,
      relayOrigin: this.relay.origin,
      chainId: this.deployment.chainId,
      contract: this.deployment.contract,
      registry: this.registry,
      identityKeys: keys,
      ...(linked ? { linked } : {}),
    };
    rememberSession(session);
    return session;
  }

  /** A fresh challenge signed with the current key (EIP-191 over loginMessage), sent with the credential. */
  private async loginWithKeys(username: string, credential: string, keys: UnlockedKey[]): Promise<Session> {
    const { challenge } = await this.relay.post("/v1/login/challenge", { username }, ChallengeResponse);
    const message = loginMessage({ username, challenge, chainId: this.deployment.chainId.toString(), contractAddress: this.deployment.contract });
    const signature = await new Wallet(keys[0].privateKey).signMessage(message);
    const login = await this.step("logging in", this.relay.post("/v1/login", { username, credential, challenge, signature }, LoginResponse));
    if (login.keyIndex !== keys[0].index) {
      throw new ChatError("WRONG_KEY", `the relay logged ${username} in with key ${login.keyIndex}, this browser holds key ${keys[0].index}`);
    }
    return this.session(username, login, keys);
  }

  /** A linked device's login: its own Ed25519 key signs deviceLoginText; the relay answers with its newest credential. */
  private async loginWithDevice(params: { username: string; deviceId: string; credential: Uint8Array; deviceSecret: Uint8Array; sign: (text: string) => Promise<Uint8Array> }): Promise<Session> {
    const { username, deviceId } = params;
    const { challenge } = await this.relay.post("/v1/login/challenge", { username }, ChallengeResponse);
    const text = deviceLoginText({ username, challenge, chainId: this.deployment.chainId, contract: this.deployment.contract, deviceId });
    const signature = bytesToHex(await params.sign(text));
    const login = await this.step(
      "logging in this device",
      this.relay.post("/v1/login/device", { username, deviceId, credential: encodeBase64(params.credential), challenge, signature }, DeviceLoginResponse),
    );
    if (login.deviceId !== deviceId) throw new ChatError("LOGIN_FAILED", `the relay logged in device ${login.deviceId}, not this device ${deviceId}`);
    await updateLinkedCredential(username, login.credential, login.keyIndex);
    return this.session(username, login, [], { deviceId, deviceSecret: params.deviceSecret, credential: decodeBase64(login.credential) });
  }

  /** Unlocks the user's current key (index from the chain) and the one before it. */
  private async unlockCurrentKeys(username: string, password: string): Promise<UnlockedKey[]> {
    if (!(await this.registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
    const current = await this.registry.currentKey(username);
    const local = (await localKeys(username)).filter((key) => !key.pending);
    const mine = local.find((key) => key.index === current.index);
    if (!mine) {
      const hint = local.length > 0 ? `its key changed on chain to key ${current.index} from another device` : "this browser holds no key of it";
      throw new ChatError("WRONG_KEY", `cannot log in as ${username}: ${hint}; link this browser as a device from one that holds the key`);
    }
    if (mine.address !== current.address) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the key ${current.index} in this browser is not the one on chain`);
    const keys = [await unlockKey({ username, index: current.index, password, progress: this.scryptProgress("unlocking the keystore (scrypt)") })];
    for (const older of local.filter((key) => key.index < current.index).slice(-OLDER_KEYS_UNLOCKED)) {
      keys.push(await unlockKey({ username, index: older.index, password, progress: this.scryptProgress("unlocking an older key (scrypt)") }));
    }
    this.progress(null);
    return keys;
  }

  /** Register: a new key, saved before the transaction, its registration through the relay, checked on chain, then login. */
  async register(rawUsername: string, password: string): Promise<{ session: Session; fingerprint: string; blockNumber: number }> {
    const username = assertUsername(rawUsername);
    if (password.length === 0) throw new ChatError("BAD_REQUEST", "choose a password");
    if (await this.registry.isRegistered(username)) throw new ChatError("USERNAME_TAKEN", `username taken: ${username}`);
    const credential = await this.credential(username, password);
    const { credentialHash } = await this.relay.post("/v1/credential-hash", { username, credential }, CredentialHashResponse);
    const privateKey = newPrivateKey();
    const publicKey = publicKeyOf(privateKey);
    const deadline = await this.deadline();
    const signature = signRegistryTypedData({
      privateKey,
      domain: this.domain(),
      data: { primaryType: "Register", message: { username, credentialHash, publicKey, nonce: 0n, deadline: BigInt(deadline) } },
    });
    // Saved before the transaction: if the answer is lost after the block, the key is not.
    const local = await storeKey({ username, index: 0, privateKey, password, pending: true, progress: this.scryptProgress("encrypting the new key (scrypt)") });
    this.progress(null);
    let receipt;
    try {
      receipt = await this.step(
        `registering ${username}: waiting for the transaction's block`,
        this.relay.post("/v1/register", { username, credential, publicKey, deadline, signature }, TransactionResponse),
      );
    } catch (error) {
      if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") await dropPendingKey(username, 0);
      throw error;
    }
    // The relay's word is not enough: the chain must hold our key.
    const record = await this.registry.keyRecord(username, 0);
    if (record.address !== local.address) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain holds another key than the one registered here`);
    await confirmKey(username, 0);
    const session = await this.loginWithKeys(username, credential, [{ index: 0, privateKey }]);
    return { session, fingerprint: keyFingerprint(publicKey), blockNumber: receipt.blockNumber };
  }

  /** Login with the password: the identity key in this browser, or, for a linked browser, its device key. */
  async login(rawUsername: string, password: string): Promise<Session> {
    const username = assertUsername(rawUsername);
    if (password.length === 0) throw new ChatError("BAD_REQUEST", "enter the password");
    const linked = await linkedDevice(username);
    if (linked) return this.loginLinked(username, password);
    const keys = await this.unlockCurrentKeys(username, password);
    const credential = await this.credential(username, password);
    return this.loginWithKeys(username, credential, keys);
  }

  private async loginLinked(username: string, password: string): Promise<Session> {
    const { record, deviceSecret } = await unlockDeviceSecret(username, password, this.scryptProgress("unlocking this device (scrypt)"));
    this.progress(null);
    if (!this.hooks.openLinked) {
      throw new ChatError("DEVICE_BUSY", "this browser is a linked device, and the messaging engine that holds its device key is not available in this build");
    }
    const device = await this.hooks.openLinked({
      username,
      deviceId: record.deviceId,
      deviceSecret,
      chainId: this.deployment.chainId,
      contract: this.deployment.contract,
      registry: this.registry,
    });
    return this.loginWithDevice({ username, deviceId: record.deviceId, credential: decodeBase64(record.credential), deviceSecret, sign: (text) => device.signText(text) });
  }

  /**
   * Logout: ends the session on the relay, then wipes every IndexedDB database of the app and its session
   * data in localStorage. Returns a warning when the relay could not be told (the token then stands until it expires).
   */
  async logout(session: { token: string; expiresAt: number } | undefined): Promise<{ warning?: string }> {
    return logoutEverywhere(this.relay, session);
  }

  /** The owner's self-check on chain: a pending reset, and whether the current key is in this browser. */
  async checkOwnAccount(username: string): Promise<OwnAccountState> {
    const [current, pending, chainTime, local, linked] = await Promise.all([
      this.registry.currentKey(username),
      this.registry.pendingReset(username),
      this.deployment.chain.latestTimestamp(),
      localKeys(username),
      linkedDevice(username),
    ]);
    const confirmed = local.filter((key) => !key.pending);
    const onThisBrowser = confirmed.some((key) => key.address === current.address && key.index === current.index);
    return {
      username,
      pendingReset: pending ? { ...pending, toThisBrowser: local.some((key) => key.address === pending.address) } : null,
      currentKey: { ...current, onThisBrowser },
      chainTime,
      canCancel: onThisBrowser && !linked,
    };
  }

  /** Cancels a pending reset, signed by the CURRENT key (from the session, else unlocked with the password); confirmed on chain. */
  async cancelReset(username: string, options: { session?: Session; password?: string }): Promise<{ blockNumber: number; effectiveAt: number }> {
    const pending = await this.registry.pendingReset(username);
    if (!pending) throw new ChatError("NO_PENDING_RESET", `no reset of ${username} is pending on chain: nothing to cancel`);
    const current = await this.registry.currentKey(username);
    const local = (await localKeys(username)).find((key) => key.index === current.index && !key.pending);
    if (!local || local.address !== current.address) {
      throw new ChatError("NO_LOCAL_KEY", `this browser does not hold ${username}'s current key (key ${current.index}): only a device that does can cancel`);
    }
    let key = options.session?.username === username ? options.session.identityKeys.find((k) => k.index === current.index) : undefined;
    if (!key) {
      if (!options.password) throw new ChatError("USAGE", `enter the password of ${username} to unlock key ${current.index}`);
      key = await unlockKey({ username, index: current.index, password: options.password, progress: this.scryptProgress("unlocking the keystore (scrypt)") });
      this.progress(null);
    }
    const nonce = await this.registry.nonce(username);
    const deadline = await this.deadline();
    const signature = signRegistryTypedData({
      privateKey: key.privateKey,
      domain: this.domain(),
      data: { primaryType: "CancelReset", message: { username, nonce, deadline: BigInt(deadline) } },
    });
    const receipt = await this.step(
      `cancelling the pending reset of ${username}: waiting for the transaction's block`,
      this.relay.post("/v1/reset/cancel", { username, deadline, signature }, TransactionResponse),
    );
    const after = await this.registry.pendingReset(username);
    if (after?.address === pending.address) throw new ChatError("KEY_MISMATCH", `the chain still shows the reset of ${username} pending after the relay's answer`);
    return { blockNumber: receipt.blockNumber, effectiveAt: pending.effectiveAt };
  }

  /**
   * Rotate key: a new key authorised on chain by the current key's EIP-712 signature (and the new key's),
   * kept as pending before the transaction and confirmed once the chain names it current; then a fresh
   * session bound to the new key, and the afterRotation hook (the MLS device follows the new key).
   */
  async rotateKey(session: Session, password: string): Promise<RotationResult> {
    if (session.linked) throw new ChatError("USAGE", "this is a linked device: it holds no identity key; rotate the key on a device that does");
    const username = session.username;
    const [current, ...older] = await this.unlockCurrentKeys(username, password);
    const index = current.index + 1;
    const privateKey = newPrivateKey();
    const newPublicKey = publicKeyOf(privateKey);
    const nonce = await this.registry.nonce(username);
    const deadline = await this.deadline();
    const data = { primaryType: "RotateKey" as const, message: { username, newPublicKey, nonce, deadline: BigInt(deadline) } };
    const currentKeySignature = signRegistryTypedData({ privateKey: current.privateKey, domain: this.domain(), data });
    const newKeySignature = signRegistryTypedData({ privateKey, domain: this.domain(), data });
    const local = await storeKey({ username, index, privateKey, password, pending: true, progress: this.scryptProgress("encrypting the new key (scrypt)") });
    this.progress(null);
    let receipt;
    try {
      receipt = await this.step(
        "rotating: waiting for the transaction's block",
        this.relay.post("/v1/rotate", { username, newPublicKey, deadline, currentKeySignature, newKeySignature }, TransactionResponse, { token: session.token }),
      );
    } catch (error) {
      if (error instanceof ChatError && error.code !== "RELAY_UNREACHABLE") await dropPendingKey(username, index);
      throw error;
    }
    const onChain = await this.registry.currentKey(username);
    if (onChain.index !== index || onChain.address !== local.address) throw new ChatError("KEY_MISMATCH", `key mismatch for ${username}: the chain's current key is not the new key`);
    await confirmKey(username, index);
    // A fresh session bound to the new key (the old token names the old key index).
    const credential = await this.credential(username, password);
    const fresh = await this.loginWithKeys(username, credential, [{ index, privateKey }, current, ...older].slice(0, 3));
    let warning: string | undefined;
    if (this.hooks.afterRotation) {
      try {
        await this.step("re-authorising this browser's messaging key", this.hooks.afterRotation(fresh));
      } catch (error) {
        warning = `this browser's messaging key could not be re-authorised (${describe(error)}); the key rotation itself is done, and the next sync retries`;
      }
    }
    return { session: fresh, keyIndex: index, blockNumber: receipt.blockNumber, fingerprint: keyFingerprint(newPublicKey), ...(warning ? { warning } : {}) };
  }

  /**
   * Links this browser as a new device of an existing account: asks the relay for a link request, returns
   * the code and this device's fingerprint at once, and (in `completed`) waits for a device holding the
   * identity key to approve it; then seals a fresh device secret under the password, lets the messaging
   * engine create the device's MLS state (createLinked), and logs in with the device's own key.
   */
  async startLink(rawUsername: string, password: string, rawName?: string): Promise<LinkRequest> {
    const username = assertUsername(rawUsername);
    if (password.length === 0) throw new ChatError("BAD_REQUEST", "enter the password");
    if (!(await this.registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
    if ((await localKeys(username)).length > 0 || (await linkedDevice(username))) {
      throw new ChatError("BAD_REQUEST", `this browser already holds a device of ${username}: log in instead`);
    }
    const name = rawName === undefined || rawName.trim() === "" ? undefined : DeviceName.safeParse(rawName.trim());
    if (name && !name.success) throw new ChatError("USAGE", "a device name is 1 to 64 printable characters");
    const signatureKey = await generateDeviceSignatureKey();
    const fingerprint = deviceFingerprint(signatureKey.publicKey);
    const request = await this.relay.post(
      "/v2/device-links",
      { username, devicePublicKey: bytesToHex(signatureKey.publicKey), ...(name?.success ? { deviceName: name.data } : {}) },
      CreateDeviceLinkResponse,
    );
    let cancelled = false;
    const completed = (async () => {
      const approved = await this.waitForApproval(request.linkSecret, request.expiresAt, () => cancelled);
      const deviceSecret = randomBytes(32);
      await storeLinkedDevice({
        username,
        deviceId: approved.deviceId,
        credential: approved.credential,
        keyIndex: approved.keyIndex,
        deviceSecret,
        password,
        progress: this.scryptProgress("protecting this device's secret (scrypt)"),
      });
      this.progress(null);
      const credential = decodeBase64(approved.credential);
      let warning: string | undefined;
      if (this.hooks.createLinked) {
        await this.step(
          "creating this device's messaging state",
          this.hooks.createLinked({
            username,
            deviceId: approved.deviceId,
            deviceSecret,
            signatureKey,
            credential,
            keyIndex: approved.keyIndex,
            chainId: this.deployment.chainId,
            contract: this.deployment.contract,
            registry: this.registry,
          }),
        );
      } else {
        warning = "linked and logged in, but the messaging engine is not available in this build: this browser cannot join conversations yet";
      }
      const suite = await mlsCipherSuite();
      const session = await this.loginWithDevice({
        username,
        deviceId: approved.deviceId,
        credential,
        deviceSecret,
        sign: (text) => suite.signature.sign(signatureKey.signKey, new TextEncoder().encode(text)),
      });
      return { session, ...(warning ? { warning } : {}) };
    })();
    return { code: request.code, fingerprint, expiresAt: request.expiresAt, completed, cancel: () => (cancelled = true) };
  }

  private async waitForApproval(linkSecret: string, expiresAt: number, cancelled: () => boolean) {
    for (;;) {
      if (cancelled()) throw new ChatError("CANCELLED", "linking cancelled");
      const status = await this.relay.get(`/v2/device-links/status?secret=${encodeURIComponent(linkSecret)}`, DeviceLinkStatusResponse);
      if (status.status === "approved") return status;
      if (status.status === "expired" || Date.now() > expiresAt + 5_000) {
        throw new ChatError("CANCELLED", "the link request expired before a device holding the key approved it: start again");
      }
      await sleep(LINK_POLL_MS);
    }
  }
}

/**
 * Ends the session on the relay (when there is one), then wipes all of the app's IndexedDB databases and its
 * session data in localStorage, whether or not the relay answered. Usable without a chain connection.
 */
export async function logoutEverywhere(relay: RelayApi, session: { token: string; expiresAt: number } | undefined): Promise<{ warning?: string }> {
  let warning: string | undefined;
  if (session) {
    try {
      await relay.post("/v1/logout", {}, LogoutResponse, { token: session.token });
    } catch (error) {
      warning = `could not end the session on the relay (${describe(error)}); its token stays valid until ${new Date(session.expiresAt).toLocaleString()}`;
    }
  }
  closeKeystore();
  await deleteAllDatabases();
  for (const key of Object.keys(localStorage)) if (key.startsWith(SESSION_STORAGE_PREFIX)) localStorage.removeItem(key);
  return warning ? { warning } : {};
}
