/**
 * One MLS device of one user (RFC 9420) over the relay's Delivery Service: its signature key and group
 * states sealed at rest (device-store.ts), key package upkeep, one-to-one and group operations, and
 * catch-up from each group's ordered log. Every credential met (key packages claimed, commits processed,
 * welcomes joined) is checked against the user's key history read from the chain, never from the relay.
 */
import { sha256 } from "@noble/hashes/sha2.js";
import { Wallet } from "ethers";
import { encodeMlsMessage, type AuthenticationService, type ClientConfig, type ClientState, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { ChatError, isChatError } from "../protocol/errors";
import {
  acceptPendingCommit,
  addMembers,
  MAX_ADDS_PER_COMMIT,
  authorizeDevice,
  createMlsGroup,
  decodeDeviceIdentity,
  decodeMlsMessageBytes,
  type PayloadKind,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  groupMembers,
  mlsCipherSuite,
  joinFromWelcome,
  mlsClientConfig,
  newPayloadId,
  openGroupState,
  outdatedMembers,
  ownLeafCarries,
  processIncomingMessage,
  reauthorizeLeaf,
  removeMembers,
  replaceMembers,
  sealApplicationMessage,
  sealGroupState,
  selfUpdate,
  snapshotKeyBook,
  type KeyBook,
  type PendingCommit,
} from "../protocol/mls";
import { LogEntrySchema, MAX_V2_BODY_BYTES, decodeBase64, encodeBase64, type LogEntryWire } from "../protocol/wire-v2";
import { EarlyEntry, EarlyFrame } from "../protocol/wire";
import { bytesToHex, hexToBytes, randomBytes } from "../protocol/bytes";
import type { DeviceView } from "../protocol/wire-devices";
import type { DeliveryServiceClient, DsDeviceRef } from "./ds-client";
import { DeviceStore, MAX_EARLY_IDS, openBytes, sealBytes, type DeviceDocuments, type GroupFile, type KeyPackageEntry, type UnlockedKey } from "./device-store";

export const DEFAULT_ONE_TIME_KEY_PACKAGES = 10;
/** What one add commit's request may take, below the relay's body limit (MAX_V2_BODY_BYTES) for headroom. */
const ADD_REQUEST_BUDGET_BYTES = Math.floor(MAX_V2_BODY_BYTES * 0.9);

/** An add whose request would exceed the relay's limit: built but never sent, so nothing is pending. */
class AddTooLarge extends Error {}
export const DEFAULT_KEY_PACKAGE_LIFETIME_SECONDS = 30 * 24 * 3600;
/** Log entries read per request while catching up. */
const LOG_PAGE = 200;
/** A commit that keeps losing its epoch to others is given up after this many tries. */
const MAX_COMMIT_ATTEMPTS = 8;
/** The relay's id of an application message: its payload id, prefixed, so a re-sent message keeps its id. */
const applicationEntryId = (payloadId: string) => `m${payloadId}`;

export interface ReceivedMessage {
  groupId: string;
  /** its position in the group's log; absent when applied from an early frame, before the relay gave it one */
  seq?: number;
  from: string;
  /** the payload id: a message seen twice (after a crash) has the same id */
  id: string;
  sentAt: number;
  body: string;
  /** the sending device as the relay names it; a text `from` this user came from another of its devices */
  fromDeviceId: string;
}

export type GroupEvent =
  | { kind: "joined"; groupId: string; epoch: number }
  /** `added` and `removed`: the users who joined or left with this commit (from the trees before and after) */
  | {
      kind: "commit";
      groupId: string;
      seq: number;
      by: string;
      epoch: number;
      added: string[];
      removed: string[];
      /** users already in the group (and still in it) who gained or lost a device with this commit */
      devicesAdded: string[];
      devicesRemoved: string[];
    }
  /** a member named (or renamed) the group */
  | { kind: "named"; groupId: string; seq: number; by: string; name: string }
  /** a member asked to leave; another member commits the removal */
  | { kind: "leaving"; groupId: string; seq: number; by: string }
  /** `by` is empty when the relay's refusal, not the commit, told this device */
  | { kind: "removed"; groupId: string; seq: number; by: string }
  /** an entry this device could not accept (refused credential, erased epoch, garbage from the relay) */
  | { kind: "refused"; groupId: string; seq: number; code: string; message: string }
  /** this device's leaf now carries a credential authorised by the user's identity key `keyIndex` */
  | { kind: "reauthorized"; groupId: string; seq: number; keyIndex: number }
  /** devices whose key was replaced on chain left, and their users' current devices joined, in one commit */
  | { kind: "members-replaced"; groupId: string; seq: number; removed: string[]; added: string[] }
  /** this user's own devices changed in the group: `added` devices linked since joined, `removed` revoked ones left */
  | { kind: "own-devices"; groupId: string; seq: number; added: number; removed: number }
  /** following a key change failed in this group (groupId "" for the device itself); retried at the next sync */
  | { kind: "key-change-failed"; groupId: string; code: string; message: string };

export interface MemberInfo {
  username: string;
  leafIndex: number;
  /** the on-chain key index that authorised the device */
  keyIndex: number;
  /** that key's address, read from the chain */
  identityAddress: string | undefined;
  /** SHA-256 of the device's Ed25519 key, first 16 bytes as hex in groups of 4 */
  deviceFingerprint: string;
}

/** Where a device keeps its state, and how its operations are kept one at a time. */
export interface DeviceStorage {
  documents: DeviceDocuments;
  /**
   * Runs `work` alone on this device's state: no other operation of this device (in this process or, where
   * the platform can tell, another) runs meanwhile; an operation called from inside another runs in its turn.
   */
  exclusive<T>(work: () => Promise<T>): Promise<T>;
}

export interface MlsDeviceOptions {
  storage: DeviceStorage;
  username: string;
  /** the session's unlocked identity keys, current first; the first one authorises a new device (empty on a linked device) */
  identityKeys: UnlockedKey[];
  /**
   * A linked device's secret (from its session): it opens the MLS state instead of an identity key. Such a
   * device is created by createLinked with the credential another device signed for it, never by open.
   */
  deviceSecret?: Uint8Array;
  chainId: bigint;
  contract: string;
  /** the user key histories, from the client's own chain reader (chainKeyBook) */
  keyBook: KeyBook;
  /** the Delivery Service client of this device (its id is only known once the device is opened) */
  connect: (deviceId: string) => DeliveryServiceClient;
  oneTimeKeyPackages?: number;
  keyPackageLifetimeSeconds?: number;
  /**
   * Receives each page of messages before the device's state and cursor move past them, so a crash
   * shows a message again (same id) rather than losing it.
   */
  deliver?: (messages: ReceivedMessage[]) => void | Promise<void>;
  /** Unix seconds: the clock the rotation grace is measured with (tests move it) */
  now?: () => number;
}

interface DeviceSecrets {
  publicKey: string;
  signKey: string;
  identity: string;
}

const hex = bytesToHex;
const unhex = hexToBytes;

export function deviceFingerprint(signaturePublicKey: Uint8Array): string {
  return hex(sha256(signaturePublicKey).subarray(0, 16)).match(/.{4}/g)!.join(" ");
}

/** The last error the key book met reading the chain (reset before each check that must tell it apart). */
interface ChainFailures {
  last?: unknown;
}

type WatchedOptions = MlsDeviceOptions & { chainFailures: ChainFailures };

/**
 * The key book, noting its failures: the library turns any error in a credential check into "invalid", and
 * a commit or welcome refused because the chain was unreachable must be retried later, not skipped.
 */
function watchedKeyBook(book: KeyBook, failures: ChainFailures): KeyBook {
  const note = (error: unknown): never => {
    failures.last = error;
    throw error;
  };
  return {
    keyRecord: (username, index) => book.keyRecord(username, index).catch(note),
    keyCount: (username) => book.keyCount(username).catch(note),
  };
}

export class MlsDevice {
  /** why credentials were refused lately (the library only reports a boolean) */
  readonly refusals: string[] = [];
  /** while a log entry is processed: when the relay received it (Unix s), the time its credentials are judged at */
  private judgedAt: number | undefined;
  private readonly strict: ClientConfig;
  private readonly lenient: ClientConfig;

  private constructor(
    private readonly options: WatchedOptions,
    private readonly store: DeviceStore,
    private readonly stateKey: Uint8Array,
    readonly deviceId: string,
    /** the identity key index that authorised this device's credential (it moves on re-authorisation) */
    private authorizedBy: number,
    private readonly secrets: { signatureKey: { publicKey: Uint8Array; signKey: Uint8Array }; credential: { credentialType: "basic"; identity: Uint8Array } },
    readonly ds: DeliveryServiceClient,
  ) {
    const service = (policy: "strict" | "lenient") =>
      deviceAuthenticationService({
        keyBook: options.keyBook,
        policy,
        chainId: options.chainId,
        contract: options.contract,
        now: options.now,
        judgedAt: () => this.judgedAt,
        onRefused: (reason) => {
          this.refusals.push(`${reason.code}: ${reason.message}`);
          if (this.refusals.length > 100) this.refusals.shift();
        },
      });
    this.strict = mlsClientConfig(service("strict"));
    this.lenient = mlsClientConfig(service("lenient"));
  }

  get username(): string {
    return this.options.username;
  }

  private throwIfChainFailed(): void {
    const failure = this.options.chainFailures.last;
    if (failure === undefined) return;
    this.options.chainFailures.last = undefined;
    if (isChatError(failure)) throw failure;
    throw new ChatError("CHAIN_UNAVAILABLE", `the chain could not be read to check a credential: ${(failure as Error)?.message ?? failure}`);
  }

  /** Opens this user's device in its storage, creating it (a fresh Ed25519 key authorised by the current identity key) on first use. */
  static async open(given: MlsDeviceOptions): Promise<MlsDevice> {
    const chainFailures: ChainFailures = {};
    const options = { ...given, keyBook: watchedKeyBook(given.keyBook, chainFailures), chainFailures };
    const store = new DeviceStore(options.storage.documents, options.username);
    return options.storage.exclusive(() => MlsDevice.openLocked(store, options));
  }

  private static async openLocked(store: DeviceStore, options: WatchedOptions): Promise<MlsDevice> {
    const stateKey = options.deviceSecret ? store.linkedStateKey(options.deviceSecret) : store.stateKey(options.identityKeys);
    let file = store.readDevice();
    if (!file && options.deviceSecret) throw new ChatError("NO_LOCAL_KEY", `no linked device of ${options.username} here: link this device first`);
    if (!file) {
      const current = options.identityKeys[0];
      const signatureKey = await generateDeviceSignatureKey();
      const credential = await authorizeDevice({
        username: options.username,
        keyIndex: current.index,
        chainId: options.chainId,
        contract: options.contract,
        devicePublicKey: signatureKey.publicKey,
        sign: (text) => new Wallet(current.privateKey).signMessage(text),
      });
      const secrets: DeviceSecrets = { publicKey: hex(signatureKey.publicKey), signKey: hex(signatureKey.signKey), identity: hex(credential.identity) };
      file = {
        deviceId: hex(randomBytes(8)),
        keyIndex: current.index,
        sealed: sealBytes(stateKey, "device", new TextEncoder().encode(JSON.stringify(secrets))),
      };
      store.writeDevice(file);
    }
    const secrets = JSON.parse(new TextDecoder().decode(openBytes(stateKey, "device", file.sealed))) as DeviceSecrets;
    return new MlsDevice(
      options,
      store,
      stateKey,
      file.deviceId,
      file.keyIndex,
      {
        signatureKey: { publicKey: unhex(secrets.publicKey), signKey: unhex(secrets.signKey) },
        credential: { credentialType: "basic", identity: unhex(secrets.identity) },
      },
      options.connect(file.deviceId),
    );
  }

  /**
   * Saves a linked device: its Ed25519 key, the credential a device holding the identity key signed for it
   * (checked here against the chain, strictly, before anything is written) and the relay's id for it, all
   * sealed under a state key that the device secret wraps. Then opens it.
   */
  static async createLinked(
    given: MlsDeviceOptions & { deviceSecret: Uint8Array },
    linked: { deviceId: string; signatureKey: { publicKey: Uint8Array; signKey: Uint8Array }; credential: Uint8Array },
  ): Promise<MlsDevice> {
    const chainFailures: ChainFailures = {};
    const options = { ...given, keyBook: watchedKeyBook(given.keyBook, chainFailures), chainFailures };
    const store = new DeviceStore(options.storage.documents, options.username);
    return options.storage.exclusive(async () => {
      if (store.readDevice()) throw new ChatError("BAD_REQUEST", `a device of ${options.username} is already here`);
      const identity = decodeDeviceIdentity(linked.credential);
      if (identity.username !== options.username) throw new ChatError("KEY_MISMATCH", `the relay handed a credential of ${identity.username}, not ${options.username}`);
      const check = deviceAuthenticationService({ keyBook: options.keyBook, policy: "strict", chainId: options.chainId, contract: options.contract, now: options.now });
      if (!(await check.validateCredential({ credentialType: "basic", identity: linked.credential }, linked.signatureKey.publicKey))) {
        throw new ChatError("KEY_UNVERIFIED", `the credential for this device is not signed by ${options.username}'s current key on chain for this device's key`);
      }
      const stateKey = store.linkedStateKey(options.deviceSecret);
      const secrets: DeviceSecrets = { publicKey: hex(linked.signatureKey.publicKey), signKey: hex(linked.signatureKey.signKey), identity: hex(linked.credential) };
      store.writeDevice({ deviceId: linked.deviceId, keyIndex: identity.keyIndex, sealed: sealBytes(stateKey, "device", new TextEncoder().encode(JSON.stringify(secrets))) });
      return MlsDevice.openLocked(store, options);
    });
  }

  /**
   * Seals a client's own record (its message history, pinned keys) under this device's state key, so that it
   * opens only where the MLS state opens. `label` is the AAD: a sealed record cannot be moved to another slot.
   */
  sealRecord(label: string, plain: Uint8Array): string {
    return sealBytes(this.stateKey, `record ${label}`, plain);
  }

  openRecord(label: string, sealed: string): Uint8Array {
    return openBytes(this.stateKey, `record ${label}`, sealed);
  }

  /** This device's Ed25519 public key (its MLS signature key). */
  get signaturePublicKey(): Uint8Array {
    return this.secrets.signatureKey.publicKey;
  }

  /** This device's current credential (identity bytes). */
  get credentialIdentity(): Uint8Array {
    return this.secrets.credential.identity;
  }

  /** Signs `text` (UTF-8) with this device's Ed25519 key (RFC 8032, pure): a linked device's login. */
  async signText(text: string): Promise<Uint8Array> {
    return (await mlsCipherSuite()).signature.sign(this.secrets.signatureKey.signKey, new TextEncoder().encode(text));
  }

  private get self(): DsDeviceRef {
    return { username: this.options.username, deviceId: this.deviceId };
  }

  // ---- key packages ----

  private async newKeyPackage(lastResort: boolean): Promise<{ entry: KeyPackageEntry; publicBytes: Uint8Array }> {
    const lifetimeSeconds = this.options.keyPackageLifetimeSeconds ?? DEFAULT_KEY_PACKAGE_LIFETIME_SECONDS;
    const { publicPackage, privatePackage } = await generateDeviceKeyPackage({
      credential: this.secrets.credential,
      signatureKey: this.secrets.signatureKey,
      lifetimeSeconds,
    });
    const publicBytes = encodeMlsMessage({ version: "mls10", wireformat: "mls_key_package", keyPackage: publicPackage });
    const privateJson = JSON.stringify({
      initPrivateKey: hex(privatePackage.initPrivateKey),
      hpkePrivateKey: hex(privatePackage.hpkePrivateKey),
      signaturePrivateKey: hex(privatePackage.signaturePrivateKey),
    });
    return {
      publicBytes,
      entry: {
        publicPackage: encodeBase64(publicBytes),
        sealedPrivate: sealBytes(this.stateKey, "key package", new TextEncoder().encode(privateJson)),
        notAfter: Date.now() + lifetimeSeconds * 1000,
        lastResort,
      },
    };
  }

  private openKeyPackage(entry: KeyPackageEntry): { keyPackage: KeyPackage; privatePackage: PrivateKeyPackage } {
    const message = decodeMlsMessageBytes(decodeBase64(entry.publicPackage), "key package");
    if (message.wireformat !== "mls_key_package") throw new ChatError("BAD_REQUEST", "stored key package is not a key package");
    const p = JSON.parse(new TextDecoder().decode(openBytes(this.stateKey, "key package", entry.sealedPrivate)));
    return {
      keyPackage: message.keyPackage,
      privatePackage: { initPrivateKey: unhex(p.initPrivateKey), hpkePrivateKey: unhex(p.hpkePrivateKey), signaturePrivateKey: unhex(p.signaturePrivateKey) },
    };
  }

  /**
   * Keeps N one-time packages and one last-resort package on the relay. The private halves are saved
   * before the upload, so a package the relay hands out can always be joined with.
   */
  ensureKeyPackages(options: { replaceLastResort?: boolean } = {}): Promise<{ oneTime: number; lastResort: boolean }> {
    return this.options.storage.exclusive(() => this.ensureKeyPackagesLocked(options));
  }

  private async ensureKeyPackagesLocked(options: { replaceLastResort?: boolean }): Promise<{ oneTime: number; lastResort: boolean }> {
    const wanted = this.options.oneTimeKeyPackages ?? DEFAULT_ONE_TIME_KEY_PACKAGES;
    const counts = await this.ds.keyPackageCount();
    const now = Date.now();
    const kept = this.store.readKeyPackages().filter((p) => p.notAfter > now);
    const fresh: { entry: KeyPackageEntry; publicBytes: Uint8Array }[] = [];
    for (let i = counts.oneTime; i < wanted; i++) fresh.push(await this.newKeyPackage(false));
    const lastResort = !counts.lastResort || options.replaceLastResort ? await this.newKeyPackage(true) : undefined;
    if (fresh.length === 0 && !lastResort) {
      this.store.writeKeyPackages(kept);
      return counts;
    }
    this.store.writeKeyPackages([...kept, ...fresh.map((f) => f.entry), ...(lastResort ? [lastResort.entry] : [])]);
    return this.ds.putKeyPackages({
      oneTime: fresh.map((f) => ({ bytes: f.publicBytes, notAfter: f.entry.notAfter })),
      lastResort: lastResort && { bytes: lastResort.publicBytes, notAfter: lastResort.entry.notAfter },
    });
  }

  /**
   * Claims one key package per device of `username` and checks each: an MLS key package whose credential
   * names that user (a relay handing another user's package is caught here), and which the strict policy
   * accepts against the chain (checked again by the library when the commit is built). A device whose
   * package is not authorised by the user's current key (one left behind by a reset) is skipped, so it
   * cannot keep the user's current devices out; KEY_UNVERIFIED when no device is left.
   */
  async claimKeyPackages(username: string): Promise<{ device: DsDeviceRef; keyPackage: KeyPackage }[]> {
    const { accepted, refused } = await this.claimAuthorisedKeyPackages(username, this.strict.authService);
    if (accepted.length === 0) {
      throw new ChatError("KEY_UNVERIFIED", `a key package for ${username} is not authorised by their current key on chain (${refused[0]?.reason ?? "refused"})`);
    }
    return accepted;
  }

  // ---- groups ----

  private loadGroup(groupId: string): { file: GroupFile; state: ClientState } {
    const file = this.store.readGroup(groupId);
    if (!file) throw new ChatError("NOT_FOUND", `no group ${groupId} on this device`);
    const state = openGroupState({ sealed: decodeBase64(file.sealed), key: this.stateKey, groupId: unhex(groupId), clientConfig: this.strict });
    return { file, state };
  }

  private saveGroup(file: GroupFile, state: ClientState): void {
    this.store.writeGroup({ ...file, sealed: encodeBase64(sealGroupState({ state, key: this.stateKey })) });
  }

  /** The groups this device is in (ids), with the one-to-one peer or the group's name where there is one. */
  groups(): { groupId: string; peer?: string; name?: string; removed: boolean; left: boolean }[] {
    return this.store.groupIds().map((groupId) => {
      const file = this.store.readGroup(groupId)!;
      return { groupId, peer: file.peer, name: file.name, removed: file.removed === true, left: file.left === true };
    });
  }

  directGroup(peer: string): string | undefined {
    return this.groups().find((g) => g.peer === peer && !g.removed)?.groupId;
  }

  epoch(groupId: string): number {
    return Number(this.loadGroup(groupId).state.groupContext.epoch);
  }

  /** The users in this device's own tree of the group, without reading the chain. */
  usernames(groupId: string): string[] {
    return [...new Set(groupMembers(this.loadGroup(groupId).state).map((m) => m.username))];
  }

  /** Members as this device's own tree says (not the relay), with device fingerprints and on-chain keys. */
  async members(groupId: string): Promise<MemberInfo[]> {
    const { state } = this.loadGroup(groupId);
    return Promise.all(
      groupMembers(state).map(async (m) => ({
        username: m.username,
        leafIndex: m.leafIndex,
        keyIndex: m.keyIndex,
        identityAddress: (await this.options.keyBook.keyRecord(m.username, m.keyIndex))?.address,
        deviceFingerprint: deviceFingerprint(m.signaturePublicKey),
      })),
    );
  }

  /** A new group with this device alone, registered at the relay; members are added by commits. */
  private async newGroup(): Promise<string> {
    const own = await generateDeviceKeyPackage({ credential: this.secrets.credential, signatureKey: this.secrets.signatureKey, lifetimeSeconds: 3600 });
    const state = await createMlsGroup({ keyPackage: own.publicPackage, privatePackage: own.privatePackage, clientConfig: this.strict });
    const groupId = hex(state.groupContext.groupId);
    // Saved before the relay knows it, so a crash never leaves a relay group this device cannot use.
    this.saveGroup({ groupId, sealed: "", cursor: 0 }, state);
    await this.ds.createGroup(groupId, [this.self]);
    return groupId;
  }

  /**
   * The one-to-one group with `peer`, creating it when there is none: claims the peer's key packages,
   * creates the group and commits the add with a welcome. Works while the peer is offline.
   */
  startDirect(peer: string): Promise<string> {
    return this.options.storage.exclusive(() => this.startDirectLocked(peer));
  }

  private async startDirectLocked(peer: string): Promise<string> {
    if (peer === this.options.username) throw new ChatError("BAD_REQUEST", "a one-to-one chat needs another user");
    const existing = this.directGroup(peer);
    if (existing) return existing;
    const packages = [...(await this.claimKeyPackages(peer)), ...(await this.ownOtherDevicePackages())];
    const groupId = await this.newGroup();
    await this.commitAdd(groupId, packages);
    // Named as the chat with `peer` only once the peer is in it, so a failed start is not reused.
    this.store.writeGroup({ ...this.store.readGroup(groupId)!, peer });
    return groupId;
  }

  /**
   * A group with `usernames` (each user's devices, from their key packages), named `name` when given: the
   * name travels inside the group (an application message), so the relay never sees it.
   */
  createGroup(usernames: string[], name?: string): Promise<string> {
    return this.options.storage.exclusive(async () => {
      const packages = [];
      for (const username of new Set(usernames)) {
        if (username !== this.options.username) packages.push(...(await this.claimKeyPackages(username)));
      }
      packages.push(...(await this.ownOtherDevicePackages()));
      const groupId = await this.newGroup();
      if (name !== undefined) this.store.writeGroup({ ...this.store.readGroup(groupId)!, name });
      if (packages.length > 0) await this.commitAdd(groupId, packages);
      if (name !== undefined) await this.sendPayload(groupId, { kind: "group-name", body: name });
      return groupId;
    });
  }

  /** Adds every device of `usernames`; a named group's name is sent again for the newcomers. */
  add(groupId: string, usernames: string[]): Promise<void> {
    return this.options.storage.exclusive(async () => {
      const packages = [];
      for (const username of new Set(usernames)) packages.push(...(await this.claimKeyPackages(username)));
      await this.commitAdd(groupId, packages);
      const name = this.store.readGroup(groupId)?.name;
      if (name !== undefined) await this.sendPayload(groupId, { kind: "group-name", body: name });
    });
  }

  /** Names (or renames) the group for every member. */
  rename(groupId: string, name: string): Promise<void> {
    return this.options.storage.exclusive(async () => {
      await this.sendPayload(groupId, { kind: "group-name", body: name });
      this.store.writeGroup({ ...this.store.readGroup(groupId)!, name, peer: undefined });
    });
  }

  /**
   * Leaves the group: RFC 9420 lets no member commit its own removal, so this device asks the others (an
   * authenticated "leave" message) and one of them commits it. Until then the relay keeps sending to this
   * device; it stops reading and keeps the state only for the history already read.
   */
  leave(groupId: string): Promise<void> {
    return this.options.storage.exclusive(async () => {
      await this.sendPayload(groupId, { kind: "leave", body: "" });
      this.store.writeGroup({ ...this.store.readGroup(groupId)!, left: true });
    });
  }

  /**
   * Commits the removal of members who asked to leave (seen while catching up), if they are still in the
   * tree: whichever member gets there first does it; the others find nothing left to do.
   */
  honourLeaveRequests(groupId: string): Promise<void> {
    return this.options.storage.exclusive(async () => {
      const file = this.store.readGroup(groupId);
      if (!file?.leaveRequests?.length || file.removed || file.left) return;
      const { state } = this.loadGroup(groupId);
      const present = new Set(groupMembers(state).map((m) => m.username));
      const leaving = file.leaveRequests.filter((u) => u !== this.options.username && present.has(u));
      if (leaving.length > 0) {
        try {
          await this.remove(groupId, leaving);
        } catch (error) {
          // Another member removed them first (the rebuilt commit finds nobody): nothing is left to do.
          if (!isChatError(error) || error.code !== "NOT_FOUND") throw error;
        }
      }
      this.store.writeGroup({ ...this.store.readGroup(groupId)!, leaveRequests: undefined });
    });
  }

  /**
   * Adds the devices of `packages`, in as few commits as fit the relay's request size: every added device
   * gets its own copy of the Welcome, whose size grows with the group, so a large add is split (halving
   * until each commit's request fits). Returns the last commit's seq.
   */
  private async commitAdd(groupId: string, packages: { device: DsDeviceRef; keyPackage: KeyPackage }[]): Promise<number> {
    let chunk = Math.min(packages.length, MAX_ADDS_PER_COMMIT);
    let seq = 0;
    for (let done = 0; done < packages.length; ) {
      const slice = packages.slice(done, done + chunk);
      try {
        seq = await this.commit(groupId, async (state) => {
          const pending = await addMembers({ state, keyPackages: slice.map((p) => p.keyPackage) });
          // base64 in JSON: 4/3 of the bytes, the Welcome once per added device, plus the commit itself.
          const requestBytes = Math.ceil((4 / 3) * (pending.commit.length + slice.length * pending.welcome!.length)) + 512 * slice.length;
          if (requestBytes > ADD_REQUEST_BUDGET_BYTES) throw new AddTooLarge();
          return { pending, add: slice.map((p) => p.device), remove: [], welcomes: slice.map((p) => ({ ...p.device, bytes: pending.welcome! })) };
        });
      } catch (error) {
        if (!(error instanceof AddTooLarge)) throw error;
        if (chunk === 1) throw new ChatError("LIMIT_EXCEEDED", "the group is too large for the relay to carry one more Welcome");
        chunk = Math.ceil(chunk / 2);
        continue;
      }
      done += slice.length;
    }
    return seq;
  }

  /** An empty commit with a fresh path: a thief holding a copy of this device's state loses the next epoch. */
  updateKeys(groupId: string): Promise<number> {
    return this.commit(groupId, async (state) => ({ pending: await selfUpdate({ state }), add: [], remove: [], welcomes: [] }));
  }

  /** Removes every device of `usernames` (their leaves in this device's tree, and their relay membership). */
  async remove(groupId: string, usernames: string[]): Promise<void> {
    const targets = new Set(usernames);
    if (targets.has(this.options.username)) throw new ChatError("BAD_REQUEST", "use leave to remove yourself");
    await this.commit(groupId, async (state) => {
      const leaves = groupMembers(state).filter((m) => targets.has(m.username)).map((m) => m.leafIndex);
      if (leaves.length === 0) throw new ChatError("NOT_FOUND", `${usernames.join(", ")} not in the group`);
      const relayMembers = (await this.ds.members(groupId)).members.filter((m) => targets.has(m.username));
      return {
        pending: await removeMembers({ state, leafIndexes: leaves }),
        add: [],
        remove: relayMembers.map((m) => ({ username: m.username, deviceId: m.deviceId })),
        welcomes: [],
      };
    });
  }

  /**
   * Builds a commit on the caught-up state and offers it to the relay. The next state is saved sealed as
   * pending first: if the answer is lost, the commit's echo in the log adopts it. On EPOCH_CONFLICT another
   * commit won the epoch: catch up (processing the winner) and rebuild. Returns the commit's seq.
   */
  private commit(
    groupId: string,
    build: (state: ClientState) => Promise<{ pending: PendingCommit; add: DsDeviceRef[]; remove: DsDeviceRef[]; welcomes: (DsDeviceRef & { bytes: Uint8Array })[] }>,
  ): Promise<number> {
    return this.options.storage.exclusive(() => this.commitLocked(groupId, build));
  }

  private async commitLocked(
    groupId: string,
    build: (state: ClientState) => Promise<{ pending: PendingCommit; add: DsDeviceRef[]; remove: DsDeviceRef[]; welcomes: (DsDeviceRef & { bytes: Uint8Array })[] }>,
  ): Promise<number> {
    for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
      await this.catchUp(groupId);
      const { file, state } = this.loadGroup(groupId);
      if (file.removed) throw new ChatError("NOT_GROUP_MEMBER", "this device was removed from the group");
      const change = await build(state);
      const id = hex(randomBytes(12));
      const epoch = Number(change.pending.epoch);
      this.store.writeGroup({ ...file, pending: { id, epoch, sealedNext: encodeBase64(sealGroupState({ state: change.pending.next, key: this.stateKey })) } });
      const result = await this.ds.commit(groupId, { epoch, id, bytes: change.pending.commit, welcomes: change.welcomes, add: change.add, remove: change.remove });
      const latest = this.store.readGroup(groupId)!;
      if (result.accepted) {
        this.saveGroup({ ...latest, pending: undefined }, acceptPendingCommit(change.pending));
        return result.seq;
      }
      this.store.writeGroup({ ...latest, pending: undefined });
    }
    throw new ChatError("EPOCH_CONFLICT", `gave up after ${MAX_COMMIT_ATTEMPTS} commits lost their epoch to others`);
  }

  /**
   * Sends one text to the group, after catching up; an epoch gone by while sealing is caught up and resealed.
   * A retry after a lost answer passes the first attempt's `id` and `sentAt`: the relay stores one entry per
   * id, and receivers drop a payload id they have seen.
   */
  send(groupId: string, body: string, retry?: { id: string; sentAt: number }): Promise<{ id: string; seq: number }> {
    return this.sendPayload(groupId, { kind: "text", body, ...retry });
  }

  private sendPayload(groupId: string, payload: { kind: PayloadKind; body: string; id?: string; sentAt?: number }): Promise<{ id: string; seq: number }> {
    return this.options.storage.exclusive(() => this.sendLocked(groupId, payload));
  }

  private async sendLocked(groupId: string, payload: { kind: PayloadKind; body: string; id?: string; sentAt?: number }): Promise<{ id: string; seq: number }> {
    const { kind, body } = payload;
    const id = payload.id ?? newPayloadId();
    const sentAt = payload.sentAt ?? Date.now();
    for (let attempt = 0; attempt < MAX_COMMIT_ATTEMPTS; attempt++) {
      await this.catchUp(groupId);
      const { file, state } = this.loadGroup(groupId);
      if (file.removed) throw new ChatError("NOT_GROUP_MEMBER", "this device was removed from the group");
      if (file.left) throw new ChatError("NOT_GROUP_MEMBER", "you left this group");
      const sealed = await sealApplicationMessage({ state, payload: { kind, id, sentAt, body } });
      // The message key is used up whether or not the relay takes the message: save before sending.
      this.saveGroup(file, sealed.state);
      const result = await this.ds.sendApplication(groupId, { epoch: Number(state.groupContext.epoch), id: applicationEntryId(id), bytes: sealed.message });
      if (!result.accepted) continue;
      // Caught up to just before this message: there is nothing to read up to it (a device skips its own
      // messages), so the next entry, handed in a notice, follows without a gap. The relay moved its cursor
      // with the append unless a move of this device was still on its way; then it is told.
      const after = this.store.readGroup(groupId)!;
      if (after.cursor === result.seq - 1) {
        this.store.writeGroup({ ...after, cursor: result.seq });
        // Only a hint for the relay (what it may purge, what sync lists): a failure here costs no message.
        if ((result.cursor ?? 0) < result.seq) await this.ds.advanceCursor(groupId, result.seq).catch(() => undefined);
      }
      return { id, seq: result.seq };
    }
    throw new ChatError("EPOCH_CONFLICT", "the group kept moving to new epochs; try again");
  }

  /**
   * Reads the group's log beyond this device's cursor and applies it in order: others' commits move the
   * epoch, this device's own commit echo adopts its pending state, application messages are opened and
   * handed to `deliver`. The state and cursor are saved after each page, then the relay's cursor moves.
   */
  catchUp(groupId: string): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    return this.options.storage.exclusive(() => this.catchUpLocked(groupId));
  }

  /**
   * Applies log entries the relay handed along with a group notice, as a catch-up would apply them from a
   * log read, saving the read: only when they follow this device's cursor without a gap; otherwise (and when
   * any of them is refused) it is an ordinary catch-up from the log. They are the same unauthenticated relay
   * data as a log read, checked the same way, and never trusted more: a refused one is not skipped on the
   * notice's word, the log decides.
   */
  applyNotice(groupId: string, entries: readonly LogEntryWire[]): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const parsed = LogEntrySchema.array().max(LOG_PAGE).safeParse(entries);
    const handed = parsed.success && parsed.data.every((e, i) => i === 0 || e.seq === parsed.data[i - 1].seq + 1) ? parsed.data : undefined;
    return this.options.storage.exclusive(() => this.catchUpLocked(groupId, handed));
  }

  /**
   * Applies an application message the relay handed on before storing it (an early frame), with the checks
   * of a log read, and remembers its id: the log entry that comes later with that id is passed over, as its
   * message key is used up. Only a text of this device's current epoch is applied, and only when its
   * authenticated sender and payload id are the ones the relay named (so a remembered id can only pass over
   * a copy of this very message); anything else is dropped with nothing saved, and the log entry is read
   * as usual.
   */
  applyEarly(groupId: string, entry: EarlyEntry): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const parsed = EarlyEntry.safeParse(entry);
    if (!parsed.success || !EarlyFrame.shape.groupId.safeParse(groupId).success) return Promise.resolve({ messages: [], events: [] });
    return this.options.storage.exclusive(async () => {
      const message = await this.openEarly(groupId, parsed.data);
      if (!message) return { messages: [], events: [] };
      await this.options.deliver?.([message.received]);
      const early = [...(message.file.early ?? []), parsed.data.id].slice(-MAX_EARLY_IDS);
      this.saveGroup({ ...message.file, early }, message.state);
      return { messages: [message.received], events: [] };
    });
  }

  /** The text an early entry carries and the state after opening it, or undefined when it is not to be applied now. */
  private async openEarly(groupId: string, entry: EarlyEntry): Promise<{ received: ReceivedMessage; file: GroupFile; state: ClientState } | undefined> {
    const file = this.store.readGroup(groupId);
    if (!file || file.removed || file.left || file.early?.includes(entry.id)) return undefined;
    if (entry.sender.username === this.options.username && entry.sender.deviceId === this.deviceId) return undefined;
    try {
      const { state } = this.loadGroup(groupId);
      if (Number(state.groupContext.epoch) !== entry.epoch) return undefined;
      const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
      if (result.kind !== "application" || (result.payload.kind ?? "text") !== "text") return undefined;
      if (result.sender.username !== entry.sender.username || applicationEntryId(result.payload.id) !== entry.id) return undefined;
      const { id, sentAt, body } = result.payload;
      return { received: { groupId, from: result.sender.username, id, sentAt, body, fromDeviceId: entry.sender.deviceId }, file, state: result.state };
    } catch (error) {
      // Refused or unreadable: the log entry is read as usual, and decides.
      if (isChatError(error)) return undefined;
      throw error;
    }
  }

  private async catchUpLocked(groupId: string, handed?: LogEntryWire[]): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const messages: ReceivedMessage[] = [];
    const events: GroupEvent[] = [];
    for (;;) {
      let { file, state } = this.loadGroup(groupId);
      if (file.removed || file.left) break;
      let page: Awaited<ReturnType<DeliveryServiceClient["log"]>>;
      // Entries handed with a notice stand in for the first read only when they are exactly the next ones.
      const fromNotice = handed !== undefined && handed.length > 0 && handed[0].seq === file.cursor + 1;
      try {
        page = fromNotice ? { entries: handed!, epoch: 0, lastSeq: 0 } : await this.ds.log(groupId, file.cursor, LOG_PAGE);
        handed = undefined;
      } catch (error) {
        // The relay drops a removed device from the group with the commit that removes it, so the device
        // may learn it here, before (or instead of) reading that commit.
        if (!isChatError(error) || error.code !== "NOT_GROUP_MEMBER") throw error;
        this.store.writeGroup({ ...file, removed: true });
        events.push({ kind: "removed", groupId, seq: file.cursor, by: "" });
        break;
      }
      const batch: ReceivedMessage[] = [];
      const pageEvents: GroupEvent[] = [];
      /** a handed entry was refused: nothing of the handed page is kept, the log is read instead */
      let distrusted = false;
      for (const entry of page.entries) {
        if (entry.seq <= file.cursor) continue;
        const own = entry.sender.username === this.options.username && entry.sender.deviceId === this.deviceId;
        this.options.chainFailures.last = undefined;
        const refuse = (error: unknown) => {
          if (!isChatError(error)) throw error;
          // A check that failed for want of the chain is no verdict: stop here, keep the cursor, retry later.
          this.throwIfChainFailed();
          if (fromNotice) distrusted = true;
          else pageEvents.push({ kind: "refused", groupId, seq: entry.seq, code: error.code, message: error.message });
        };
        if (entry.kind === "handshake") {
          if (own) {
            if (file.pending?.id === entry.id) {
              state = openGroupState({ sealed: decodeBase64(file.pending.sealedNext), key: this.stateKey, groupId: unhex(groupId), clientConfig: this.strict });
              file = { ...file, pending: undefined };
            }
            // otherwise already applied when the relay accepted it
          } else {
            if (file.pending && file.pending.epoch === entry.epoch) file = { ...file, pending: undefined };
            try {
              const beforeMembers = groupMembers(state);
              const before = new Set(beforeMembers.map((m) => m.username));
              this.judgedAt = Math.floor(entry.receivedAt / 1000);
              const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) }).finally(() => (this.judgedAt = undefined));
              if (result.kind === "commit") {
                state = result.state;
                const afterMembers = groupMembers(state);
                const after = new Set(afterMembers.map((m) => m.username));
                const changed = deviceChanges(beforeMembers, afterMembers);
                pageEvents.push({
                  kind: "commit",
                  groupId,
                  seq: entry.seq,
                  by: result.sender.username,
                  epoch: Number(result.epoch),
                  added: [...after].filter((u) => !before.has(u)),
                  removed: [...before].filter((u) => !after.has(u)),
                  devicesAdded: changed.added.filter((u) => before.has(u) && after.has(u)),
                  devicesRemoved: changed.removed.filter((u) => before.has(u) && after.has(u)),
                });
              } else if (result.kind === "removed") {
                state = result.state;
                file = { ...file, removed: true };
                pageEvents.push({ kind: "removed", groupId, seq: entry.seq, by: result.sender.username });
              } else {
                refuse(new ChatError("ENVELOPE_INVALID", `handshake at seq ${entry.seq} is not a commit this device can apply`));
              }
            } catch (error) {
              refuse(error);
            }
          }
        } else if (!own && file.early?.includes(entry.id)) {
          // Applied and shown from an early frame: its message key is used up, so it is passed over.
          const early = file.early.filter((id) => id !== entry.id);
          file = { ...file, early: early.length > 0 ? early : undefined };
        } else if (!own) {
          try {
            const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
            if (result.kind === "application") {
              state = result.state;
              const by = result.sender.username;
              const kind = result.payload.kind ?? "text";
              if (kind === "text") {
                batch.push({ groupId, seq: entry.seq, from: by, id: result.payload.id, sentAt: result.payload.sentAt, body: result.payload.body, fromDeviceId: entry.sender.deviceId });
              } else if (kind === "group-name") {
                // A named group is not a one-to-one chat, whatever its size. Told to the stored file at once (the
                // state and cursor there are untouched), so the texts that follow in this page are filed under the group.
                // The name is sent again after every add for the newcomers: the others hear only of a change.
                const renamed = file.name !== result.payload.body;
                file = { ...file, name: result.payload.body, peer: undefined };
                this.store.writeGroup({ ...this.store.readGroup(groupId)!, name: result.payload.body, peer: undefined });
                if (renamed) pageEvents.push({ kind: "named", groupId, seq: entry.seq, by, name: result.payload.body });
              } else {
                if (by !== this.options.username) file = { ...file, leaveRequests: [...new Set([...(file.leaveRequests ?? []), by])] };
                pageEvents.push({ kind: "leaving", groupId, seq: entry.seq, by });
              }
            } else {
              refuse(new ChatError("ENVELOPE_INVALID", `entry ${entry.seq} is not an application message`));
            }
          } catch (error) {
            refuse(error);
          }
        }
        if (distrusted) break;
        file = { ...file, cursor: entry.seq };
        if (file.removed) break;
      }
      if (distrusted) continue;
      events.push(...pageEvents);
      if (batch.length > 0) await this.options.deliver?.(batch);
      messages.push(...batch);
      this.saveGroup(file, state);
      if (page.entries.length > 0 && !file.removed) {
        try {
          await this.ds.advanceCursor(groupId, file.cursor);
        } catch (error) {
          if (!isChatError(error) || error.code !== "NOT_GROUP_MEMBER") throw error;
          this.store.writeGroup({ ...this.store.readGroup(groupId)!, removed: true });
          events.push({ kind: "removed", groupId, seq: file.cursor, by: "" });
          break;
        }
      }
      if (file.removed || page.entries.length < LOG_PAGE) break;
    }
    return { messages, events };
  }

  /**
   * Joins the groups whose welcomes wait for this device, then catches up every group with news.
   * A welcome that no local key package opens, or whose tree has a leaf the chain does not authorise,
   * is acknowledged and reported, so it is not retried forever.
   */
  sync(): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    return this.options.storage.exclusive(() => this.syncLocked());
  }

  private async syncLocked(): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const messages: ReceivedMessage[] = [];
    const pending = await this.ds.sync();
    const events = await this.joinLocked(pending.welcomes);
    const groups = new Set(pending.groups.map((g) => g.groupId));
    // The relay lists only groups with news, and drops a removed device with the commit that removes it:
    // a group this device still thinks it is in but cannot read any more is caught up to learn so.
    for (const local of this.groups()) {
      if (groups.has(local.groupId) || local.removed || local.left) continue;
      try {
        await this.ds.log(local.groupId, this.store.readGroup(local.groupId)!.cursor, 1);
      } catch (error) {
        if (!isChatError(error) || error.code !== "NOT_GROUP_MEMBER") throw error;
        groups.add(local.groupId);
      }
    }
    const listed = new Map(pending.groups.map((g) => [g.groupId, g]));
    for (const groupId of groups) {
      const local = this.store.readGroup(groupId);
      if (!local) continue;
      const relay = listed.get(groupId);
      // Read already, the relay's cursor only fell behind (a cursor frame held or lost with an earlier
      // process): a catch-up reads nothing and moves nothing, so the move is sent here, or the group would
      // be listed with news at every sync.
      if (relay && relay.cursor < local.cursor && local.cursor >= relay.lastSeq && !local.removed && !local.left) {
        await this.ds.advanceCursor(groupId, local.cursor).catch(() => undefined);
      }
      const result = await this.catchUp(groupId);
      messages.push(...result.messages);
      events.push(...result.events);
      await this.honourLeaveRequests(groupId);
    }
    // Key changes happen on chain, not in the logs: the groups are checked against it once caught up.
    events.push(...(await this.followKeyChanges()));
    // Devices linked or revoked since: the relay's list of this user's devices says which.
    const devices = await this.ds.devices().catch((error: unknown) => {
      // A relay without device routes, or a moment without it: nothing to follow now.
      if (isChatError(error) && (error.code === "NOT_FOUND" || error.code === "RELAY_UNREACHABLE")) return undefined;
      throw error;
    });
    if (devices) events.push(...(await this.followOwnDevices(devices.devices)));
    return { messages, events };
  }

  /**
   * Joins the groups whose welcomes wait for this device and reads no group's log: a live conversation
   * watching one group leaves the others' messages for the inbox.
   */
  joinWelcomes(): Promise<GroupEvent[]> {
    return this.options.storage.exclusive(async () => this.joinLocked((await this.ds.sync()).welcomes));
  }

  private async joinLocked(welcomes: { id: string; groupId: string; bytes: string }[]): Promise<GroupEvent[]> {
    const events: GroupEvent[] = [];
    for (const welcome of welcomes) {
      this.options.chainFailures.last = undefined;
      try {
        events.push(await this.join(welcome.groupId, decodeBase64(welcome.bytes)));
      } catch (error) {
        if (!isChatError(error)) throw error;
        // Without the chain the welcome's members cannot be checked: keep it on the relay for the next sync.
        this.throwIfChainFailed();
        events.push({ kind: "refused", groupId: welcome.groupId, seq: 0, code: error.code, message: error.message });
      }
      await this.ds.ackWelcome(welcome.id);
    }
    return events;
  }

  private async join(groupId: string, welcome: Uint8Array): Promise<GroupEvent> {
    if (this.store.readGroup(groupId)) return { kind: "joined", groupId, epoch: this.epoch(groupId) };
    const packages = this.store.readKeyPackages();
    let lastError: unknown = new ChatError("ENVELOPE_INVALID", "no key package of this device opens the welcome");
    for (const entry of packages) {
      if (entry.notAfter <= Date.now()) continue;
      const { keyPackage, privatePackage } = this.openKeyPackage(entry);
      let state: ClientState;
      try {
        state = await joinFromWelcome({ welcome, keyPackage, privatePackage, joinConfig: this.lenient, memberConfig: this.strict });
      } catch (error) {
        // The welcome is encrypted to one package; the others fail to find their secrets.
        if (!isChatError(error)) throw error;
        lastError = error;
        continue;
      }
      if (hex(state.groupContext.groupId) !== groupId) throw new ChatError("ENVELOPE_INVALID", "the welcome is for another group than the relay says");
      // The relay started this device's cursor at the commit that added it.
      const me = (await this.ds.members(groupId)).members.find((m) => m.username === this.options.username && m.deviceId === this.deviceId);
      const others = new Set(groupMembers(state).map((m) => m.username).filter((u) => u !== this.options.username));
      // One other user (with however many devices of each): a one-to-one chat; a named group says so later.
      const peer = others.size === 1 ? [...others][0] : undefined;
      this.saveGroup({ groupId, sealed: "", cursor: me?.cursor ?? 0, ...(peer ? { peer } : {}) }, state);
      if (entry.lastResort) {
        await this.ensureKeyPackages({ replaceLastResort: true });
      } else {
        // A one-time package is never used again.
        this.store.writeKeyPackages(this.store.readKeyPackages().filter((p) => p.publicPackage !== entry.publicPackage));
        await this.ensureKeyPackages();
      }
      return { kind: "joined", groupId, epoch: Number(state.groupContext.epoch) };
    }
    throw lastError;
  }

  // ---- following key changes on chain ----

  /** The identity key index that authorised this device's current credential. */
  get keyIndex(): number {
    return this.authorizedBy;
  }

  /**
   * Re-authorises this device under the user's current identity key (the first of `identityKeys`, checked
   * against the chain) after a rotation: the same Ed25519 key with a new credential signed by the new
   * key; fresh key packages that replace all of this device's packages at the relay (the old ones carry the
   * old credential, which peers refuse once the grace has passed); then, in every group, a commit whose
   * update path carries the new credential. Every step checks what is already done, so a run cut short is
   * finished by the next one (sync does that). A group that cannot follow is reported, not thrown.
   */
  reauthorize(): Promise<{ keyIndex: number; events: GroupEvent[] }> {
    return this.options.storage.exclusive(() => this.reauthorizeLocked());
  }

  private async reauthorizeLocked(): Promise<{ keyIndex: number; events: GroupEvent[] }> {
    await this.renewCredential();
    const events: GroupEvent[] = [];
    for (const { groupId, removed } of this.groups()) {
      if (!removed) events.push(...(await this.keyChangeStep(groupId, () => this.reauthorizeGroup(groupId))));
    }
    return { keyIndex: this.authorizedBy, events };
  }

  /**
   * Brings this device's groups in line with the chain (sync calls it after catching up): re-authorises
   * this device when the session holds a newer identity key than the one behind its credential; then in
   * each group, removes the leaves the strict policy no longer accepts (devices authorised by a key that a
   * reset replaced, or by one rotated away longer ago than the grace) and adds those users' devices
   * authorised by their current key, in one commit. Whichever member gets there first does it; the others
   * lose the epoch, catch up and find nothing left to do. A device that is itself no longer authorised
   * changes nothing: members would refuse its commits.
   */
  followKeyChanges(): Promise<GroupEvent[]> {
    return this.options.storage.exclusive(() => this.followKeyChangesLocked());
  }

  private async followKeyChangesLocked(): Promise<GroupEvent[]> {
    const current = this.options.identityKeys[0];
    if (current && current.index > this.authorizedBy) {
      const failed = await this.keyChangeStep("", async () => {
        await this.renewCredential();
        return [];
      });
      if (failed.length > 0) return failed;
    }
    const events: GroupEvent[] = [];
    const check = this.keyCheck();
    const ownValid = await this.keyChangeStep("", async () => {
      if (await check.validateCredential(this.secrets.credential, this.secrets.signatureKey.publicKey)) return [];
      throw new ChatError("KEY_UNVERIFIED", `this device's credential (key ${this.authorizedBy}) is no longer accepted on chain; it cannot change its groups`);
    });
    if (ownValid.length > 0) return ownValid;
    for (const { groupId, removed } of this.groups()) {
      if (removed) continue;
      events.push(...(await this.keyChangeStep(groupId, async () => [...(await this.reauthorizeGroup(groupId)), ...(await this.replaceOutdated(groupId, check))])));
    }
    return events;
  }

  /** A strict check over a key book whose counts are read once per pass (one chain read per user, not per leaf). */
  private keyCheck(): AuthenticationService {
    if (!this.followCheck) {
      const book = snapshotKeyBook(this.options.keyBook);
      const service = deviceAuthenticationService({
        keyBook: book,
        policy: "strict",
        chainId: this.options.chainId,
        contract: this.options.contract,
        now: this.options.now,
        onRefused: (reason) => {
          this.refusals.push(`${reason.code}: ${reason.message}`);
          if (this.refusals.length > 100) this.refusals.shift();
        },
      });
      this.followCheck = { book, service };
    }
    this.followCheck.book.refresh();
    return this.followCheck.service;
  }

  /** Runs one key-change step; a refusal or an unreachable relay or chain becomes an event, retried at the next sync. */
  private async keyChangeStep(groupId: string, step: () => Promise<GroupEvent[]>): Promise<GroupEvent[]> {
    try {
      return await step();
    } catch (error) {
      if (!isChatError(error)) throw error;
      return [{ kind: "key-change-failed", groupId, code: error.code, message: error.message }];
    }
  }

  /**
   * A new credential for this device's Ed25519 key, signed by the current identity key, and key packages
   * carrying it in place of every old one. device.json is written last, so a run cut short is redone
   * (the EIP-191 signature is deterministic, RFC 6979, so the credential comes out the same).
   */
  private async renewCredential(): Promise<void> {
    const current = this.options.identityKeys[0];
    if (!current) throw new ChatError("NO_LOCAL_KEY", "no unlocked identity key: log in first");
    const username = this.options.username;
    // The chain, not the session, says which key is current: never re-authorise under a replaced key.
    const count = await this.options.keyBook.keyCount(username);
    const record = await this.options.keyBook.keyRecord(username, current.index);
    const wallet = new Wallet(current.privateKey);
    if (current.index !== count - 1 || record?.address.toLowerCase() !== wallet.address.toLowerCase()) {
      throw new ChatError("KEY_MISMATCH", `identity key ${current.index} is not ${username}'s current key on chain`);
    }
    if (current.index === this.authorizedBy) return;
    const credential = await authorizeDevice({
      username,
      keyIndex: current.index,
      chainId: this.options.chainId,
      contract: this.options.contract,
      devicePublicKey: this.secrets.signatureKey.publicKey,
      sign: (text) => wallet.signMessage(text),
    });
    await this.installCredential(credential, current.index);
  }

  /** Makes `credential` this device's: key packages carrying it replace the old ones, then device.json. */
  private async installCredential(credential: { credentialType: "basic"; identity: Uint8Array }, keyIndex: number): Promise<void> {
    this.secrets.credential = credential;
    await this.replaceKeyPackages();
    const secrets: DeviceSecrets = {
      publicKey: hex(this.secrets.signatureKey.publicKey),
      signKey: hex(this.secrets.signatureKey.signKey),
      identity: hex(credential.identity),
    };
    this.store.writeDevice({
      deviceId: this.deviceId,
      keyIndex,
      sealed: sealBytes(this.stateKey, "device", new TextEncoder().encode(JSON.stringify(secrets))),
    });
    this.authorizedBy = keyIndex;
  }

  /**
   * Adopts a credential that a device holding the identity key signed for this one (a linked device after
   * its user's key rotated: from its device login or GET /v2/devices/self/credential). It must name this
   * user, be newer than the one held, and pass the strict check against the chain for this device's own
   * key; then, as reauthorize() does, key packages are replaced and each group's leaf is updated.
   */
  adoptCredential(identity: Uint8Array): Promise<{ keyIndex: number; events: GroupEvent[] }> {
    return this.options.storage.exclusive(async () => {
      const decoded = decodeDeviceIdentity(identity);
      if (decoded.username !== this.options.username) throw new ChatError("KEY_MISMATCH", `the relay handed a credential of ${decoded.username}, not ${this.options.username}`);
      if (decoded.keyIndex > this.authorizedBy) {
        const credential = { credentialType: "basic" as const, identity };
        if (!(await this.keyCheck().validateCredential(credential, this.secrets.signatureKey.publicKey))) {
          throw new ChatError("KEY_UNVERIFIED", `the new credential (key ${decoded.keyIndex}) is not accepted on chain for this device: ${this.refusals.at(-1) ?? "refused"}`);
        }
        await this.installCredential(credential, decoded.keyIndex);
      }
      const events: GroupEvent[] = [];
      for (const { groupId, removed } of this.groups()) {
        if (!removed) events.push(...(await this.keyChangeStep(groupId, () => this.reauthorizeGroup(groupId))));
      }
      return { keyIndex: this.authorizedBy, events };
    });
  }

  // ---- this user's other devices ----

  /**
   * Key packages of this user's other unrevoked devices (by the relay's device list, each package carrying
   * the listed device's own key and passing the strict check), so that a new conversation includes them
   * from its first epoch. Nothing is claimed when there is no other device, or the relay lists none.
   */
  private async ownOtherDevicePackages(): Promise<{ device: DsDeviceRef; keyPackage: KeyPackage }[]> {
    const listed = await this.ds.devices().catch((error: unknown) => {
      if (isChatError(error) && (error.code === "NOT_FOUND" || error.code === "RELAY_UNREACHABLE")) return undefined;
      throw error;
    });
    const ownKey = hex(this.secrets.signatureKey.publicKey);
    const others = new Map((listed?.devices ?? []).filter((d) => d.revokedAt === null && d.devicePublicKey !== ownKey).map((d) => [d.deviceId, d.devicePublicKey]));
    if (others.size === 0) return [];
    const claimed = await this.claimAuthorisedKeyPackages(this.options.username, this.strict.authService).catch((error: unknown) => {
      if (isChatError(error) && error.code === "NOT_FOUND") return { accepted: [], refused: [] } as ClaimedPackages;
      throw error;
    });
    return claimed.accepted.filter((p) => others.get(p.device.deviceId) === hex(p.keyPackage.leafNode.signaturePublicKey));
  }

  /** How many of this device's live groups lack the device with Ed25519 key `devicePublicKey` (hex). */
  groupsWithout(devicePublicKey: string): number {
    return this.groups().filter(({ groupId, removed, left }) => !removed && !left && !groupMembers(this.loadGroup(groupId).state).some((m) => hex(m.signaturePublicKey) === devicePublicKey)).length;
  }

  /** How many distinct devices (Ed25519 keys) of `username` sit in this device's groups, by its own trees. */
  deviceCount(username: string): number {
    const keys = new Set<string>();
    for (const { groupId, removed } of this.groups()) {
      if (removed) continue;
      for (const m of groupMembers(this.loadGroup(groupId).state)) if (m.username === username) keys.add(hex(m.signaturePublicKey));
    }
    return keys.size;
  }

  /**
   * Brings this user's own devices in every group in line with the relay's device list: leaves of revoked
   * devices are removed, and unrevoked devices missing from a group are added with a key package claimed
   * for them (one that carries that device's own key and passes the strict check), in one commit per group.
   * A device with no package yet is left for a later sync. The relay's list only chooses whom to act on:
   * whom to add is still checked against the chain, and a removal only drops this user's own devices.
   */
  followOwnDevices(devices: DeviceView[]): Promise<GroupEvent[]> {
    return this.options.storage.exclusive(async () => {
      const events: GroupEvent[] = [];
      for (const { groupId, removed, left } of this.groups()) {
        if (removed || left) continue;
        events.push(...(await this.keyChangeStep(groupId, () => this.followOwnDevicesIn(groupId, devices))));
      }
      return events;
    });
  }

  private async followOwnDevicesIn(groupId: string, devices: DeviceView[]): Promise<GroupEvent[]> {
    const me = this.options.username;
    const ownKey = hex(this.secrets.signatureKey.publicKey);
    const revoked = devices.filter((d) => d.revokedAt !== null && d.devicePublicKey !== ownKey);
    const kept = devices.filter((d) => d.revokedAt === null && d.devicePublicKey !== ownKey);
    const revokedKeys = new Set(revoked.map((d) => d.devicePublicKey));
    const needs = (state: ClientState) => {
      const mine = groupMembers(state).filter((m) => m.username === me && m.leafIndex !== state.privatePath.leafIndex);
      const present = new Set(mine.map((m) => hex(m.signaturePublicKey)));
      return { remove: mine.filter((m) => revokedKeys.has(hex(m.signaturePublicKey))), missing: kept.filter((d) => !present.has(d.devicePublicKey)) };
    };
    const first = needs(this.loadGroup(groupId).state);
    if (first.remove.length === 0 && first.missing.length === 0) return [];
    let claimed: Promise<ClaimedPackages> | undefined;
    let summary = { added: 0, removed: 0 };
    const seq = await this.commitIfNeeded(groupId, async (state) => {
      const { remove, missing } = needs(state);
      let adds: ClaimedPackages["accepted"] = [];
      if (missing.length > 0) {
        claimed ??= this.claimAuthorisedKeyPackages(me, this.strict.authService).catch((error: unknown) => {
          if (isChatError(error) && error.code === "NOT_FOUND") return { accepted: [], refused: [] };
          throw error;
        });
        const wanted = new Map(missing.map((d) => [d.deviceId, d.devicePublicKey]));
        adds = (await claimed).accepted.filter((p) => wanted.get(p.device.deviceId) === hex(p.keyPackage.leafNode.signaturePublicKey));
      }
      if (remove.length === 0 && adds.length === 0) return undefined;
      const revokedIds = new Set(revoked.map((d) => d.deviceId));
      const relayMembers = (await this.ds.members(groupId)).members.filter((m) => m.username === me && revokedIds.has(m.deviceId));
      const pending = await replaceMembers({ state, removeLeafIndexes: remove.map((m) => m.leafIndex), addKeyPackages: adds.map((p) => p.keyPackage) });
      summary = { added: adds.length, removed: remove.length };
      return {
        pending,
        add: adds.map((p) => p.device),
        remove: relayMembers.map((m) => ({ username: m.username, deviceId: m.deviceId })),
        welcomes: pending.welcome ? adds.map((p) => ({ ...p.device, bytes: pending.welcome! })) : [],
      };
    });
    if (seq === undefined) return [];
    // A named group's name travels inside it: sent again, so that the devices that just joined know it.
    const name = this.store.readGroup(groupId)?.name;
    if (summary.added > 0 && name !== undefined) await this.sendPayload(groupId, { kind: "group-name", body: name });
    return [{ kind: "own-devices", groupId, seq, ...summary }];
  }

  /**
   * Uploads a full set of key packages with the current credential and has the relay drop every older one
   * of this device. The older private halves stay until they expire: a welcome made from one before the
   * replacement can still be joined, and the group is then re-authorised at the next sync.
   */
  private async replaceKeyPackages(): Promise<void> {
    const wanted = this.options.oneTimeKeyPackages ?? DEFAULT_ONE_TIME_KEY_PACKAGES;
    const fresh: { entry: KeyPackageEntry; publicBytes: Uint8Array }[] = [];
    for (let i = 0; i < wanted; i++) fresh.push(await this.newKeyPackage(false));
    const lastResort = await this.newKeyPackage(true);
    const now = Date.now();
    const kept = this.store.readKeyPackages().filter((p) => p.notAfter > now);
    this.store.writeKeyPackages([...kept, ...fresh.map((f) => f.entry), lastResort.entry]);
    await this.ds.putKeyPackages({
      oneTime: fresh.map((f) => ({ bytes: f.publicBytes, notAfter: f.entry.notAfter })),
      lastResort: { bytes: lastResort.publicBytes, notAfter: lastResort.entry.notAfter },
      replace: true,
    });
  }

  /** Commits this device's current credential into the group's tree, unless its leaf already carries it. */
  private async reauthorizeGroup(groupId: string): Promise<GroupEvent[]> {
    const credential = this.secrets.credential;
    // Decided on the saved state first, so that a group with nothing to do costs no request.
    if (ownLeafCarries(this.loadGroup(groupId).state, credential)) return [];
    const seq = await this.commitIfNeeded(groupId, async (state) =>
      ownLeafCarries(state, credential) ? undefined : { pending: await reauthorizeLeaf({ state, credential }), add: [], remove: [], welcomes: [] },
    );
    return seq === undefined ? [] : [{ kind: "reauthorized", groupId, seq, keyIndex: this.authorizedBy }];
  }

  /**
   * Removes the group's leaves that `check` refuses and adds their users' devices that it accepts, in one
   * commit. The relay drops from the group the devices whose packages were refused (those left behind by
   * the key change); a device with no package on file cannot be told apart and stays listed at the relay,
   * which gives it nothing readable: its leaf is gone from the tree.
   */
  private async replaceOutdated(groupId: string, check: AuthenticationService): Promise<GroupEvent[]> {
    const outdatedIn = async (state: ClientState) =>
      (await outdatedMembers({ state, authService: check })).filter((m) => m.leafIndex !== state.privatePath.leafIndex);
    if ((await outdatedIn(this.loadGroup(groupId).state)).length === 0) return [];
    // Claimed once per user for this group, even when the commit is rebuilt after losing its epoch.
    const claims = new Map<string, Promise<ClaimedPackages>>();
    const claim = (username: string) => {
      let pending = claims.get(username);
      if (!pending) {
        pending = this.claimAuthorisedKeyPackages(username, check).catch((error: unknown) => {
          if (isChatError(error) && error.code === "NOT_FOUND") return { accepted: [], refused: [] };
          throw error;
        });
        claims.set(username, pending);
      }
      return pending;
    };
    let summary = { removed: [] as string[], added: [] as string[] };
    const seq = await this.commitIfNeeded(groupId, async (state) => {
      const outdated = await outdatedIn(state);
      if (outdated.length === 0) return undefined;
      const leaving = new Set(outdated.map((m) => m.leafIndex));
      const staying = new Set(groupMembers(state).filter((m) => !leaving.has(m.leafIndex)).map((m) => hex(m.signaturePublicKey)));
      const adds: { device: DsDeviceRef; keyPackage: KeyPackage }[] = [];
      const refused = new Set<string>();
      for (const username of new Set(outdated.map((m) => m.username))) {
        const claimed = await claim(username);
        adds.push(...claimed.accepted.filter((p) => !staying.has(hex(p.keyPackage.leafNode.signaturePublicKey))));
        for (const r of claimed.refused) refused.add(`${r.device.username}\n${r.device.deviceId}`);
      }
      const relayMembers = (await this.ds.members(groupId)).members;
      const pending = await replaceMembers({ state, removeLeafIndexes: [...leaving], addKeyPackages: adds.map((p) => p.keyPackage) });
      summary = { removed: outdated.map((m) => m.username), added: adds.map((p) => p.device.username) };
      return {
        pending,
        add: adds.map((p) => p.device),
        remove: relayMembers.filter((m) => refused.has(`${m.username}\n${m.deviceId}`)).map((m) => ({ username: m.username, deviceId: m.deviceId })),
        welcomes: pending.welcome ? adds.map((p) => ({ ...p.device, bytes: pending.welcome! })) : [],
      };
    });
    return seq === undefined ? [] : [{ kind: "members-replaced", groupId, seq, ...summary }];
  }

  /** commit(), except that `build` may find nothing left to do (another member did it first): undefined then. */
  private async commitIfNeeded(groupId: string, build: (state: ClientState) => Promise<CommitChange | undefined>): Promise<number | undefined> {
    try {
      return await this.commit(groupId, async (state) => {
        const change = await build(state);
        if (!change) throw new NothingToCommit();
        return change;
      });
    } catch (error) {
      if (error instanceof NothingToCommit) return undefined;
      throw error;
    }
  }

  /**
   * One key package per device of `username`, split into those `check` accepts and those it refuses.
   * A package that is not a key package, or names another user, is the relay misbehaving: thrown.
   */
  private async claimAuthorisedKeyPackages(username: string, check: AuthenticationService): Promise<ClaimedPackages> {
    const claimed = await this.ds.claimKeyPackages(username);
    const out: ClaimedPackages = { accepted: [], refused: [] };
    for (const item of claimed.keyPackages) {
      const device = { username, deviceId: item.deviceId };
      const message = decodeMlsMessageBytes(decodeBase64(item.bytes), "key package");
      if (message.wireformat !== "mls_key_package") throw new ChatError("ENVELOPE_INVALID", `the relay sent ${username} a non-key-package`);
      const leaf = message.keyPackage.leafNode;
      if (leaf.credential.credentialType !== "basic") {
        out.refused.push({ device, reason: "no device credential" });
        continue;
      }
      const identity = decodeDeviceIdentity(leaf.credential.identity);
      if (identity.username !== username) {
        throw new ChatError("KEY_MISMATCH", `the relay handed a key package of ${identity.username} when ${username} was asked for`);
      }
      if (await check.validateCredential(leaf.credential, leaf.signaturePublicKey)) out.accepted.push({ device, keyPackage: message.keyPackage });
      else out.refused.push({ device, reason: this.refusals.at(-1) ?? "refused" });
    }
    return out;
  }

  private followCheck?: { book: ReturnType<typeof snapshotKeyBook>; service: AuthenticationService };
}

type CommitChange = { pending: PendingCommit; add: DsDeviceRef[]; remove: DsDeviceRef[]; welcomes: (DsDeviceRef & { bytes: Uint8Array })[] };

interface ClaimedPackages {
  accepted: { device: DsDeviceRef; keyPackage: KeyPackage }[];
  refused: { device: DsDeviceRef; reason: string }[];
}

/** Thrown by a commit's build step when there is nothing left to commit; never leaves this file. */
class NothingToCommit extends Error {}

/** The users who gained or lost device leaves between two trees (by each leaf's Ed25519 key). */
function deviceChanges(before: { username: string; signaturePublicKey: Uint8Array }[], after: { username: string; signaturePublicKey: Uint8Array }[]): { added: string[]; removed: string[] } {
  const keys = (members: typeof before) => new Map(members.map((m) => [hex(m.signaturePublicKey), m.username]));
  const was = keys(before);
  const is = keys(after);
  return {
    added: [...new Set([...is].filter(([key]) => !was.has(key)).map(([, user]) => user))],
    removed: [...new Set([...was].filter(([key]) => !is.has(key)).map(([, user]) => user))],
  };
}
