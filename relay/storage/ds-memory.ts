/**
 * The Delivery Service stores in memory, for tests and single-process runs: nothing survives a restart.
 * Every operation runs without awaiting in between, so each one is atomic within the process.
 */
import {
  DsError,
  INITIAL_EPOCH,
  MAX_DEVICES_PER_USER,
  MAX_GROUP_DEVICES,
  MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE,
  checkApplication,
  checkCommit,
  checkCount,
  checkDevice,
  checkDevices,
  checkGroupId,
  checkKeyPackages,
  checkLimit,
  checkUsername,
  checkWelcomeId,
  deviceKey,
  epochAccepted,
  type AppendBase,
  type AppendResult,
  type ClaimedKeyPackage,
  type DeliveryServiceStore,
  type DeviceRef,
  type GroupMember,
  type KeyPackageCounts,
  type KeyPackageUpload,
  type LogEntry,
  type LogEntryKind,
  type PendingGroup,
  type StoredWelcome,
} from "./ds-types";

/**
 * One live fact of the store, from which importState() rebuilds the same state: the file store writes these
 * when it compacts its log. Group records come before their members and entries.
 */
export type DsStateRecord =
  | { t: "kp"; device: DeviceRef; oneTime: KeyPackageUpload[]; lastResort?: KeyPackageUpload }
  | { t: "g"; groupId: Uint8Array; epoch: number; lastSeq: number }
  | { t: "m"; groupId: Uint8Array; member: GroupMember }
  | { t: "e"; entry: LogEntry }
  | { t: "w"; welcome: StoredWelcome }
  | { t: "n"; nextWelcomeId: string };

export interface MemoryDeliveryServiceStore extends DeliveryServiceStore {
  exportState(): Iterable<DsStateRecord>;
  /** For a store being rebuilt only: records are trusted (they were written by exportState). */
  importState(record: DsStateRecord): void;
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("hex");
const copy = (bytes: Uint8Array) => bytes.slice();

export function createMemoryDeliveryServiceStore(): MemoryDeliveryServiceStore {
  type DeviceKeys = { oneTime: KeyPackageUpload[]; lastResort?: KeyPackageUpload };
  /** username -> deviceId -> packages */
  const keyPackages = new Map<string, Map<string, DeviceKeys>>();
  type Group = { groupId: Uint8Array; epoch: number; lastSeq: number; log: LogEntry[]; ids: Map<string, LogEntry>; members: Map<string, GroupMember> };
  const groups = new Map<string, Group>();
  let nextWelcomeId = 1n;
  /** device key -> welcomes in id order */
  const welcomesByDevice = new Map<string, StoredWelcome[]>();

  const countsOf = (keys: DeviceKeys | undefined, now: number): KeyPackageCounts => ({
    oneTime: keys ? keys.oneTime.filter((p) => p.notAfter > now).length : 0,
    lastResort: keys?.lastResort !== undefined && keys.lastResort.notAfter > now,
  });

  const groupOf = (groupId: Uint8Array): Group => {
    const group = groups.get(hex(checkGroupId(groupId)));
    if (!group) throw new DsError("DS_UNKNOWN_GROUP", "no such group");
    return group;
  };

  const applyMembers = (group: Group, add: DeviceRef[], remove: DeviceRef[], cursor: number) => {
    for (const d of remove) group.members.delete(deviceKey(d));
    for (const d of add) if (!group.members.has(deviceKey(d))) group.members.set(deviceKey(d), { ...d, cursor });
  };

  const wouldExceed = (group: Group, add: DeviceRef[], remove: DeviceRef[]) => {
    const after = new Set(group.members.keys());
    for (const d of remove) after.delete(deviceKey(d));
    for (const d of add) after.add(deviceKey(d));
    return after.size > MAX_GROUP_DEVICES;
  };

  const append = (
    kind: LogEntryKind,
    p: AppendBase,
    commit?: { add: DeviceRef[]; remove: DeviceRef[]; welcomes: { recipient: DeviceRef; bytes: Uint8Array; expiresAt: number }[] },
  ): AppendResult => {
    const group = groupOf(p.groupId);
    const sender = group.members.get(deviceKey(p.sender));
    if (!sender) throw new DsError("DS_NOT_MEMBER", "the sender is not a member of the group");
    const senderCursor = kind === "application" ? { senderCursor: sender.cursor } : {};
    const existing = group.ids.get(`${deviceKey(p.sender)}\n${p.messageId}`);
    if (existing) return { accepted: true, seq: existing.seq, epoch: existing.epoch, duplicate: true, ...senderCursor };
    if (!epochAccepted(kind, p.epoch, group.epoch)) return { accepted: false, currentEpoch: group.epoch };
    if (commit && wouldExceed(group, commit.add, commit.remove)) throw new DsError("DS_LIMIT", `at most ${MAX_GROUP_DEVICES} devices per group`);
    const entry: LogEntry = { ...p, groupId: copy(group.groupId), kind, seq: group.lastSeq + 1 };
    group.lastSeq = entry.seq;
    group.log.push(entry);
    group.ids.set(`${deviceKey(p.sender)}\n${p.messageId}`, entry);
    if (commit) {
      group.epoch += 1;
      applyMembers(group, commit.add, commit.remove, entry.seq);
      for (const w of commit.welcomes) {
        const stored: StoredWelcome = { id: String(nextWelcomeId++), groupId: copy(group.groupId), recipient: w.recipient, bytes: w.bytes, receivedAt: p.receivedAt, expiresAt: w.expiresAt };
        let list = welcomesByDevice.get(deviceKey(w.recipient));
        if (!list) welcomesByDevice.set(deviceKey(w.recipient), (list = []));
        list.push(stored);
      }
    }
    if (kind === "application") {
      if (sender.cursor === entry.seq - 1) sender.cursor = entry.seq;
      return { accepted: true, seq: entry.seq, epoch: entry.epoch, duplicate: false, senderCursor: sender.cursor };
    }
    return { accepted: true, seq: entry.seq, epoch: entry.epoch, duplicate: false };
  };

  const outEntry = (e: LogEntry): LogEntry => ({ ...e, groupId: copy(e.groupId), sender: { ...e.sender }, bytes: copy(e.bytes) });

  return {
    kind: "memory",
    // Each call takes its step at once.
    appendsInCallOrder: true,
    async migrate() {},

    async putKeyPackages(params) {
      const { device, now, oneTime, lastResort, replace } = checkKeyPackages(params);
      let byDevice = keyPackages.get(device.username);
      const known = byDevice?.has(device.deviceId) ?? false;
      if (!known && (byDevice?.size ?? 0) >= MAX_DEVICES_PER_USER) throw new DsError("DS_LIMIT", `at most ${MAX_DEVICES_PER_USER} devices per user`);
      const current = replace ? undefined : byDevice?.get(device.deviceId);
      const live = current ? current.oneTime.filter((p) => p.notAfter > now) : [];
      if (live.length + oneTime.length > MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE) {
        throw new DsError("DS_LIMIT", `at most ${MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE} one-time key packages per device`);
      }
      if (!byDevice) keyPackages.set(device.username, (byDevice = new Map()));
      const keys: DeviceKeys = { oneTime: [...live, ...oneTime], lastResort: lastResort ?? current?.lastResort };
      byDevice.set(device.deviceId, keys);
      return countsOf(keys, now);
    },

    async claimKeyPackages(params) {
      const username = checkUsername(params.username);
      const now = checkCount(params.now, "now");
      const out: ClaimedKeyPackage[] = [];
      const byDevice = keyPackages.get(username);
      if (!byDevice) return out;
      for (const deviceId of [...byDevice.keys()].sort()) {
        const keys = byDevice.get(deviceId)!;
        const index = keys.oneTime.findIndex((p) => p.notAfter > now);
        if (index >= 0) {
          const [taken] = keys.oneTime.splice(index, 1);
          out.push({ deviceId, bytes: copy(taken.bytes), notAfter: taken.notAfter, lastResort: false });
        } else if (keys.lastResort && keys.lastResort.notAfter > now) {
          out.push({ deviceId, bytes: copy(keys.lastResort.bytes), notAfter: keys.lastResort.notAfter, lastResort: true });
        }
      }
      return out;
    },

    async keyPackageCounts(params) {
      const device = checkDevice(params.device);
      return countsOf(keyPackages.get(device.username)?.get(device.deviceId), checkCount(params.now, "now"));
    },

    async removeDevice(deviceIn) {
      const device = checkDevice(deviceIn);
      const byDevice = keyPackages.get(device.username);
      byDevice?.delete(device.deviceId);
      if (byDevice?.size === 0) keyPackages.delete(device.username);
    },

    async createGroup(params) {
      const groupId = checkGroupId(params.groupId);
      const members = checkDevices(params.members, MAX_GROUP_DEVICES);
      checkCount(params.now, "now");
      if (members.length === 0) throw new DsError("DS_BAD_REQUEST", "a group starts with at least one member");
      const key = hex(groupId);
      if (groups.has(key)) throw new DsError("DS_GROUP_EXISTS", "a group with this id exists");
      const group: Group = { groupId: copy(groupId), epoch: INITIAL_EPOCH, lastSeq: 0, log: [], ids: new Map(), members: new Map() };
      applyMembers(group, members, [], 0);
      groups.set(key, group);
      return { groupId: copy(groupId), epoch: group.epoch, lastSeq: group.lastSeq };
    },

    async group(groupId) {
      const group = groups.get(hex(checkGroupId(groupId)));
      return group ? { groupId: copy(group.groupId), epoch: group.epoch, lastSeq: group.lastSeq } : undefined;
    },

    async appendCommit(params) {
      const p = checkCommit(params);
      return append("handshake", p, { add: p.addMembers, remove: p.removeMembers, welcomes: p.welcomes });
    },

    async appendApplication(params) {
      return append("application", checkApplication(params));
    },

    async read(params) {
      const group = groupOf(params.groupId);
      const afterSeq = checkCount(params.afterSeq, "afterSeq");
      const limit = checkLimit(params.limit);
      // seqs are dense from the first kept entry, so the start is found by arithmetic, not by a scan
      const first = group.log.length === 0 ? 0 : group.log[0].seq;
      const start = Math.max(0, afterSeq + 1 - first);
      return group.log.slice(start, start + limit).map(outEntry);
    },

    async readAsMember(params) {
      const group = groupOf(params.groupId);
      const device = checkDevice(params.device);
      const afterSeq = checkCount(params.afterSeq, "afterSeq");
      const limit = checkLimit(params.limit);
      if (!group.members.has(deviceKey(device))) throw new DsError("DS_NOT_MEMBER", "the device is not a member of the group");
      const first = group.log.length === 0 ? 0 : group.log[0].seq;
      const start = Math.max(0, afterSeq + 1 - first);
      return { epoch: group.epoch, lastSeq: group.lastSeq, entries: group.log.slice(start, start + limit).map(outEntry) };
    },

    async members(groupId) {
      return [...groupOf(groupId).members.values()].map((m) => ({ ...m }));
    },

    async memberUsernames(groupId) {
      return [...new Set([...groupOf(groupId).members.values()].map((m) => m.username))];
    },

    async updateMembers(params) {
      const group = groupOf(params.groupId);
      const add = checkDevices(params.add, MAX_GROUP_DEVICES);
      const remove = checkDevices(params.remove, MAX_GROUP_DEVICES);
      if (wouldExceed(group, add, remove)) throw new DsError("DS_LIMIT", `at most ${MAX_GROUP_DEVICES} devices per group`);
      applyMembers(group, add, remove, group.lastSeq);
    },

    async advanceCursor(params) {
      const device = checkDevice(params.device);
      const group = groupOf(params.groupId);
      const seq = checkCount(params.seq, "seq");
      if (seq > group.lastSeq) throw new DsError("DS_BAD_REQUEST", "cursor beyond the end of the log");
      const member = group.members.get(deviceKey(device));
      if (!member) throw new DsError("DS_NOT_MEMBER", "the device is not a member of the group");
      member.cursor = Math.max(member.cursor, seq);
      return member.cursor;
    },

    async pendingFor(deviceIn) {
      const key = deviceKey(checkDevice(deviceIn));
      const out: PendingGroup[] = [];
      for (const group of groups.values()) {
        const member = group.members.get(key);
        if (member && group.lastSeq > member.cursor) out.push({ groupId: copy(group.groupId), cursor: member.cursor, lastSeq: group.lastSeq, epoch: group.epoch });
      }
      return out;
    },

    async welcomes(params) {
      const device = checkDevice(params.device);
      const now = checkCount(params.now, "now");
      const limit = checkLimit(params.limit);
      return (welcomesByDevice.get(deviceKey(device)) ?? [])
        .filter((w) => w.expiresAt > now)
        .slice(0, limit)
        .map((w) => ({ ...w, groupId: copy(w.groupId), recipient: { ...w.recipient }, bytes: copy(w.bytes) }));
    },

    async ackWelcome(params) {
      const key = deviceKey(checkDevice(params.device));
      const id = checkWelcomeId(params.id);
      const list = welcomesByDevice.get(key);
      if (!list) return;
      const keep = list.filter((w) => w.id !== id);
      if (keep.length === 0) welcomesByDevice.delete(key);
      else welcomesByDevice.set(key, keep);
    },

    async purge(params) {
      const now = checkCount(params.now, "now");
      const logTtlMs = checkCount(params.logTtlMs, "logTtlMs");
      let keyPackagesPurged = 0;
      for (const byDevice of keyPackages.values()) {
        for (const keys of byDevice.values()) {
          const before = keys.oneTime.length;
          keys.oneTime = keys.oneTime.filter((p) => p.notAfter > now);
          keyPackagesPurged += before - keys.oneTime.length;
          if (keys.lastResort && keys.lastResort.notAfter <= now) {
            keys.lastResort = undefined;
            keyPackagesPurged++;
          }
        }
      }
      let welcomesPurged = 0;
      for (const [key, list] of welcomesByDevice) {
        const keep = list.filter((w) => w.expiresAt > now);
        welcomesPurged += list.length - keep.length;
        if (keep.length === 0) welcomesByDevice.delete(key);
        else welcomesByDevice.set(key, keep);
      }
      let logPurged = 0;
      const cutoff = now - logTtlMs;
      for (const group of groups.values()) {
        // a group nobody is left in keeps nothing worth delivering
        const low = Math.min(...[...group.members.values()].map((m) => m.cursor), Number.MAX_SAFE_INTEGER);
        let drop = 0;
        while (drop < group.log.length && group.log[drop].seq <= low && group.log[drop].receivedAt < cutoff) drop++;
        for (const e of group.log.slice(0, drop)) group.ids.delete(`${deviceKey(e.sender)}\n${e.messageId}`);
        group.log.splice(0, drop);
        logPurged += drop;
      }
      return { keyPackages: keyPackagesPurged, welcomes: welcomesPurged, logEntries: logPurged };
    },

    async close() {},

    *exportState() {
      yield { t: "n", nextWelcomeId: String(nextWelcomeId) };
      for (const [username, byDevice] of keyPackages) {
        for (const [deviceId, keys] of byDevice) yield { t: "kp", device: { username, deviceId }, oneTime: keys.oneTime, lastResort: keys.lastResort };
      }
      for (const group of groups.values()) {
        yield { t: "g", groupId: group.groupId, epoch: group.epoch, lastSeq: group.lastSeq };
        for (const member of group.members.values()) yield { t: "m", groupId: group.groupId, member };
        for (const entry of group.log) yield { t: "e", entry };
      }
      for (const list of welcomesByDevice.values()) for (const welcome of list) yield { t: "w", welcome };
    },

    importState(record) {
      switch (record.t) {
        case "n":
          nextWelcomeId = BigInt(record.nextWelcomeId);
          break;
        case "kp": {
          let byDevice = keyPackages.get(record.device.username);
          if (!byDevice) keyPackages.set(record.device.username, (byDevice = new Map()));
          byDevice.set(record.device.deviceId, { oneTime: [...record.oneTime], lastResort: record.lastResort });
          break;
        }
        case "g":
          groups.set(hex(record.groupId), { groupId: record.groupId, epoch: record.epoch, lastSeq: record.lastSeq, log: [], ids: new Map(), members: new Map() });
          break;
        case "m":
          groupOf(record.groupId).members.set(deviceKey(record.member), { ...record.member });
          break;
        case "e": {
          const group = groupOf(record.entry.groupId);
          group.log.push(record.entry);
          group.ids.set(`${deviceKey(record.entry.sender)}\n${record.entry.messageId}`, record.entry);
          break;
        }
        case "w": {
          const key = deviceKey(record.welcome.recipient);
          let list = welcomesByDevice.get(key);
          if (!list) welcomesByDevice.set(key, (list = []));
          list.push(record.welcome);
          break;
        }
      }
    },
  };
}
