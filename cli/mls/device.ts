/**
 * One MLS device of one user (RFC 9420) over the relay's Delivery Service: its signature key and group
 * states sealed at rest (device-store.ts), key package upkeep, one-to-one and group operations, and
 * catch-up from each group's ordered log. Every credential met (key packages claimed, commits processed,
 * welcomes joined) is checked against the user's key history read from the chain, never from the relay.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { sha256 } from "@noble/hashes/sha2.js";
import { Wallet } from "ethers";
import { encodeMlsMessage, type ClientConfig, type ClientState, type KeyPackage, type PrivateKeyPackage } from "ts-mls";
import { ChatError, isChatError } from "../../protocol/errors";
import {
  acceptPendingCommit,
  addMembers,
  authorizeDevice,
  createMlsGroup,
  decodeDeviceIdentity,
  decodeMlsMessageBytes,
  type PayloadKind,
  deviceAuthenticationService,
  generateDeviceKeyPackage,
  generateDeviceSignatureKey,
  groupMembers,
  joinFromWelcome,
  mlsClientConfig,
  newPayloadId,
  openGroupState,
  processIncomingMessage,
  removeMembers,
  sealApplicationMessage,
  sealGroupState,
  selfUpdate,
  type KeyBook,
  type PendingCommit,
} from "../../protocol/mls";
import { decodeBase64, encodeBase64 } from "../../protocol/wire-v2";
import type { Home } from "../home";
import type { UnlockedKey } from "../keystore";
import type { DsClient, DsDeviceRef } from "./ds-client";
import { DeviceLock } from "./device-lock";
import { DeviceStore, openBytes, sealBytes, type GroupFile, type KeyPackageEntry } from "./device-store";

export const DEFAULT_ONE_TIME_KEY_PACKAGES = 10;
export const DEFAULT_KEY_PACKAGE_LIFETIME_SECONDS = 30 * 24 * 3600;
/** Log entries read per request while catching up. */
const LOG_PAGE = 200;
/** A commit that keeps losing its epoch to others is given up after this many tries. */
const MAX_COMMIT_ATTEMPTS = 8;

export interface ReceivedMessage {
  groupId: string;
  seq: number;
  from: string;
  /** the payload id: a message seen twice (after a crash) has the same id */
  id: string;
  sentAt: number;
  body: string;
}

export type GroupEvent =
  | { kind: "joined"; groupId: string; epoch: number }
  /** `added` and `removed`: the users who joined or left with this commit (from the trees before and after) */
  | { kind: "commit"; groupId: string; seq: number; by: string; epoch: number; added: string[]; removed: string[] }
  /** a member named (or renamed) the group */
  | { kind: "named"; groupId: string; seq: number; by: string; name: string }
  /** a member asked to leave; another member commits the removal */
  | { kind: "leaving"; groupId: string; seq: number; by: string }
  /** `by` is empty when the relay's refusal, not the commit, told this device */
  | { kind: "removed"; groupId: string; seq: number; by: string }
  /** an entry this device could not accept (refused credential, erased epoch, garbage from the relay) */
  | { kind: "refused"; groupId: string; seq: number; code: string; message: string };

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

export interface MlsDeviceOptions {
  home: Home;
  username: string;
  /** the session's unlocked identity keys, current first; the first one authorises a new device */
  identityKeys: UnlockedKey[];
  chainId: bigint;
  contract: string;
  /** the user key histories, from the client's own chain reader (chainKeyBook) */
  keyBook: KeyBook;
  /** the Delivery Service client of this device (its id is only known once the device is opened) */
  connect: (deviceId: string) => DsClient;
  oneTimeKeyPackages?: number;
  keyPackageLifetimeSeconds?: number;
  /**
   * Receives each page of messages before the device's state and cursor move past them, so a crash
   * shows a message again (same id) rather than losing it.
   */
  deliver?: (messages: ReceivedMessage[]) => void | Promise<void>;
}

interface DeviceSecrets {
  publicKey: string;
  signKey: string;
  identity: string;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const unhex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));

export function deviceFingerprint(signaturePublicKey: Uint8Array): string {
  return hex(sha256(signaturePublicKey).subarray(0, 16)).match(/.{4}/g)!.join(" ");
}

export class MlsDevice {
  /** why credentials were refused lately (the library only reports a boolean) */
  readonly refusals: string[] = [];
  private readonly strict: ClientConfig;
  private readonly lenient: ClientConfig;

  private constructor(
    private readonly lock: DeviceLock,
    private readonly options: MlsDeviceOptions,
    private readonly store: DeviceStore,
    private readonly stateKey: Uint8Array,
    readonly deviceId: string,
    /** the identity key index that authorised this device's credential */
    readonly keyIndex: number,
    private readonly secrets: { signatureKey: { publicKey: Uint8Array; signKey: Uint8Array }; credential: { credentialType: "basic"; identity: Uint8Array } },
    readonly ds: DsClient,
  ) {
    const service = (policy: "strict" | "lenient") =>
      deviceAuthenticationService({
        keyBook: options.keyBook,
        policy,
        chainId: options.chainId,
        contract: options.contract,
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

  /** Opens this user's device in `home`, creating it (a fresh Ed25519 key authorised by the current identity key) on first use. */
  static async open(options: MlsDeviceOptions): Promise<MlsDevice> {
    const store = new DeviceStore(options.home, options.username);
    const lock = new DeviceLock(path.join(store.dir, "lock"));
    return lock.run(() => MlsDevice.openLocked(lock, store, options));
  }

  private static async openLocked(lock: DeviceLock, store: DeviceStore, options: MlsDeviceOptions): Promise<MlsDevice> {
    const stateKey = store.stateKey(options.identityKeys);
    let file = store.readDevice();
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
        deviceId: randomBytes(8).toString("hex"),
        keyIndex: current.index,
        sealed: sealBytes(stateKey, "device", new TextEncoder().encode(JSON.stringify(secrets))),
      };
      store.writeDevice(file);
    }
    const secrets = JSON.parse(new TextDecoder().decode(openBytes(stateKey, "device", file.sealed))) as DeviceSecrets;
    return new MlsDevice(
      lock,
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
    return this.lock.run(() => this.ensureKeyPackagesLocked(options));
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
   * accepts against the chain (checked again by the library when the commit is built).
   */
  async claimKeyPackages(username: string): Promise<{ device: DsDeviceRef; keyPackage: KeyPackage }[]> {
    const claimed = await this.ds.claimKeyPackages(username);
    const out: { device: DsDeviceRef; keyPackage: KeyPackage }[] = [];
    for (const item of claimed.keyPackages) {
      const message = decodeMlsMessageBytes(decodeBase64(item.bytes), "key package");
      if (message.wireformat !== "mls_key_package") throw new ChatError("ENVELOPE_INVALID", `the relay sent ${username} a non-key-package`);
      const leaf = message.keyPackage.leafNode;
      if (leaf.credential.credentialType !== "basic") throw new ChatError("KEY_UNVERIFIED", `a key package for ${username} has no device credential`);
      const identity = decodeDeviceIdentity(leaf.credential.identity);
      if (identity.username !== username) {
        throw new ChatError("KEY_MISMATCH", `the relay handed a key package of ${identity.username} when ${username} was asked for`);
      }
      const valid = await this.strict.authService.validateCredential(leaf.credential, leaf.signaturePublicKey);
      if (!valid) {
        throw new ChatError("KEY_UNVERIFIED", `a key package for ${username} is not authorised by their current key on chain (${this.refusals.at(-1) ?? "refused"})`);
      }
      out.push({ device: { username, deviceId: item.deviceId }, keyPackage: message.keyPackage });
    }
    return out;
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
    return this.lock.run(() => this.startDirectLocked(peer));
  }

  private async startDirectLocked(peer: string): Promise<string> {
    if (peer === this.options.username) throw new ChatError("BAD_REQUEST", "a one-to-one chat needs another user");
    const existing = this.directGroup(peer);
    if (existing) return existing;
    const packages = await this.claimKeyPackages(peer);
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
    return this.lock.run(async () => {
      const packages = [];
      for (const username of new Set(usernames)) {
        if (username !== this.options.username) packages.push(...(await this.claimKeyPackages(username)));
      }
      const groupId = await this.newGroup();
      if (name !== undefined) this.store.writeGroup({ ...this.store.readGroup(groupId)!, name });
      if (packages.length > 0) await this.commitAdd(groupId, packages);
      if (name !== undefined) await this.sendPayload(groupId, { kind: "group-name", body: name });
      return groupId;
    });
  }

  /** Adds every device of `usernames`; a named group's name is sent again for the newcomers. */
  add(groupId: string, usernames: string[]): Promise<void> {
    return this.lock.run(async () => {
      const packages = [];
      for (const username of new Set(usernames)) packages.push(...(await this.claimKeyPackages(username)));
      await this.commitAdd(groupId, packages);
      const name = this.store.readGroup(groupId)?.name;
      if (name !== undefined) await this.sendPayload(groupId, { kind: "group-name", body: name });
    });
  }

  /** Names (or renames) the group for every member. */
  rename(groupId: string, name: string): Promise<void> {
    return this.lock.run(async () => {
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
    return this.lock.run(async () => {
      await this.sendPayload(groupId, { kind: "leave", body: "" });
      this.store.writeGroup({ ...this.store.readGroup(groupId)!, left: true });
    });
  }

  /**
   * Commits the removal of members who asked to leave (seen while catching up), if they are still in the
   * tree: whichever member gets there first does it; the others find nothing left to do.
   */
  honourLeaveRequests(groupId: string): Promise<void> {
    return this.lock.run(async () => {
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

  private commitAdd(groupId: string, packages: { device: DsDeviceRef; keyPackage: KeyPackage }[]): Promise<number> {
    return this.commit(groupId, async (state) => {
      const pending = await addMembers({ state, keyPackages: packages.map((p) => p.keyPackage) });
      return {
        pending,
        add: packages.map((p) => p.device),
        remove: [],
        welcomes: packages.map((p) => ({ ...p.device, bytes: pending.welcome! })),
      };
    });
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
    return this.lock.run(() => this.commitLocked(groupId, build));
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
      const id = randomBytes(12).toString("base64url");
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
    return this.lock.run(() => this.sendLocked(groupId, payload));
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
      const result = await this.ds.sendApplication(groupId, { epoch: Number(state.groupContext.epoch), id: `m${id}`, bytes: sealed.message });
      if (result.accepted) return { id, seq: result.seq };
    }
    throw new ChatError("EPOCH_CONFLICT", "the group kept moving to new epochs; try again");
  }

  /**
   * Reads the group's log beyond this device's cursor and applies it in order: others' commits move the
   * epoch, this device's own commit echo adopts its pending state, application messages are opened and
   * handed to `deliver`. The state and cursor are saved after each page, then the relay's cursor moves.
   */
  catchUp(groupId: string): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    return this.lock.run(() => this.catchUpLocked(groupId));
  }

  private async catchUpLocked(groupId: string): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const messages: ReceivedMessage[] = [];
    const events: GroupEvent[] = [];
    for (;;) {
      let { file, state } = this.loadGroup(groupId);
      if (file.removed || file.left) break;
      let page: Awaited<ReturnType<DsClient["log"]>>;
      try {
        page = await this.ds.log(groupId, file.cursor, LOG_PAGE);
      } catch (error) {
        // The relay drops a removed device from the group with the commit that removes it, so the device
        // may learn it here, before (or instead of) reading that commit.
        if (!isChatError(error) || error.code !== "NOT_GROUP_MEMBER") throw error;
        this.store.writeGroup({ ...file, removed: true });
        events.push({ kind: "removed", groupId, seq: file.cursor, by: "" });
        break;
      }
      const batch: ReceivedMessage[] = [];
      for (const entry of page.entries) {
        if (entry.seq <= file.cursor) continue;
        const own = entry.sender.username === this.options.username && entry.sender.deviceId === this.deviceId;
        const refuse = (error: unknown) => {
          if (!isChatError(error)) throw error;
          events.push({ kind: "refused", groupId, seq: entry.seq, code: error.code, message: error.message });
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
              const before = new Set(groupMembers(state).map((m) => m.username));
              const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
              if (result.kind === "commit") {
                state = result.state;
                const after = new Set(groupMembers(state).map((m) => m.username));
                events.push({
                  kind: "commit",
                  groupId,
                  seq: entry.seq,
                  by: result.sender.username,
                  epoch: Number(result.epoch),
                  added: [...after].filter((u) => !before.has(u)),
                  removed: [...before].filter((u) => !after.has(u)),
                });
              } else if (result.kind === "removed") {
                state = result.state;
                file = { ...file, removed: true };
                events.push({ kind: "removed", groupId, seq: entry.seq, by: result.sender.username });
              } else {
                refuse(new ChatError("ENVELOPE_INVALID", `handshake at seq ${entry.seq} is not a commit this device can apply`));
              }
            } catch (error) {
              refuse(error);
            }
          }
        } else if (!own) {
          try {
            const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
            if (result.kind === "application") {
              state = result.state;
              const by = result.sender.username;
              const kind = result.payload.kind ?? "text";
              if (kind === "text") {
                batch.push({ groupId, seq: entry.seq, from: by, id: result.payload.id, sentAt: result.payload.sentAt, body: result.payload.body });
              } else if (kind === "group-name") {
                // A named group is not a one-to-one chat, whatever its size. Told to the stored file at once (the
                // state and cursor there are untouched), so the texts that follow in this page are filed under the group.
                file = { ...file, name: result.payload.body, peer: undefined };
                this.store.writeGroup({ ...this.store.readGroup(groupId)!, name: result.payload.body, peer: undefined });
                events.push({ kind: "named", groupId, seq: entry.seq, by, name: result.payload.body });
              } else {
                if (by !== this.options.username) file = { ...file, leaveRequests: [...new Set([...(file.leaveRequests ?? []), by])] };
                events.push({ kind: "leaving", groupId, seq: entry.seq, by });
              }
            } else {
              refuse(new ChatError("ENVELOPE_INVALID", `entry ${entry.seq} is not an application message`));
            }
          } catch (error) {
            refuse(error);
          }
        }
        file = { ...file, cursor: entry.seq };
        if (file.removed) break;
      }
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
    return this.lock.run(() => this.syncLocked());
  }

  private async syncLocked(): Promise<{ messages: ReceivedMessage[]; events: GroupEvent[] }> {
    const messages: ReceivedMessage[] = [];
    const pending = await this.ds.sync();
    const events = await this.joinLocked(pending.welcomes);
    const groups = new Set(pending.groups.map((g) => g.groupId));
    for (const groupId of groups) {
      if (!this.store.readGroup(groupId)) continue;
      const result = await this.catchUp(groupId);
      messages.push(...result.messages);
      events.push(...result.events);
      await this.honourLeaveRequests(groupId);
    }
    return { messages, events };
  }

  /**
   * Joins the groups whose welcomes wait for this device and reads no group's log: a live conversation
   * watching one group leaves the others' messages for the inbox.
   */
  joinWelcomes(): Promise<GroupEvent[]> {
    return this.lock.run(async () => this.joinLocked((await this.ds.sync()).welcomes));
  }

  private async joinLocked(welcomes: { id: string; groupId: string; bytes: string }[]): Promise<GroupEvent[]> {
    const events: GroupEvent[] = [];
    for (const welcome of welcomes) {
      try {
        events.push(await this.join(welcome.groupId, decodeBase64(welcome.bytes)));
      } catch (error) {
        if (!isChatError(error)) throw error;
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
      const peer = others.size === 1 && groupMembers(state).length === 2 ? [...others][0] : undefined;
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
}
