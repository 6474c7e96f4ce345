/**
 * Devices and link requests in this process's memory (a relay without MYSQL_URL). Bounded: pending
 * requests per user (the caller's cap) and in all (`maxLinks`), expired requests swept on every write.
 * Every call runs to completion without awaiting, so each is atomic in one process.
 */
import { bytesEqual } from "../../protocol/mls/bytes";
import { DeviceStoreError, type DeviceLinkRecord, type DeviceRecord, type DeviceStore } from "./devices-types";

export const DEFAULT_MAX_MEMORY_LINKS = 10_000;

const copyDevice = (d: DeviceRecord): DeviceRecord => ({ ...d, publicKey: d.publicKey.slice(), credential: d.credential.slice() });
const copyLink = (l: DeviceLinkRecord): DeviceLinkRecord => ({
  ...l,
  secretHash: l.secretHash.slice(),
  publicKey: l.publicKey.slice(),
  approved: l.approved ? { ...l.approved, credential: l.approved.credential.slice() } : null,
});
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");

export function createMemoryDeviceStore(options: { maxLinks?: number } = {}): DeviceStore {
  const maxLinks = options.maxLinks ?? DEFAULT_MAX_MEMORY_LINKS;
  const links = new Map<string, DeviceLinkRecord>();
  const codeBySecret = new Map<string, string>();
  const devicesOf = new Map<string, Map<string, DeviceRecord>>();

  const dropExpiredLinks = (now: number): number => {
    let dropped = 0;
    for (const [code, link] of links) {
      if (link.expiresAt <= now) {
        links.delete(code);
        codeBySecret.delete(hex(link.secretHash));
        dropped++;
      }
    }
    return dropped;
  };
  const live = (link: DeviceLinkRecord | undefined, now: number) => (link && link.expiresAt > now ? copyLink(link) : null);
  const activeDevices = (username: string) => [...(devicesOf.get(username)?.values() ?? [])].filter((d) => d.revokedAt === null);
  const put = (device: DeviceRecord) => {
    let mine = devicesOf.get(device.username);
    if (!mine) devicesOf.set(device.username, (mine = new Map()));
    mine.set(device.deviceId, copyDevice(device));
  };

  return {
    kind: "memory",
    migrate: async () => undefined,
    async createLink({ link, maxPendingPerUser, now }) {
      dropExpiredLinks(now);
      if (links.has(link.code)) throw new DeviceStoreError("CODE_TAKEN", "link code taken");
      const pending = [...links.values()].filter((l) => l.username === link.username && l.approved === null).length;
      if (pending >= maxPendingPerUser) throw new DeviceStoreError("LINKS_FULL", `${link.username} has ${pending} link requests waiting`);
      if (links.size >= maxLinks) throw new DeviceStoreError("LINKS_FULL", "too many link requests waiting on this relay");
      links.set(link.code, copyLink(link));
      codeBySecret.set(hex(link.secretHash), link.code);
    },
    async linkByCode(code, now) {
      return live(links.get(code), now);
    },
    async linkBySecretHash(secretHash, now) {
      const code = codeBySecret.get(hex(secretHash));
      return code === undefined ? null : live(links.get(code), now);
    },
    async approveLink({ code, device, maxDevices, now, answerUntil }) {
      const link = links.get(code);
      if (!link || link.expiresAt <= now || link.approved !== null || link.username !== device.username) {
        throw new DeviceStoreError("NO_SUCH_LINK", "no such link request waiting");
      }
      const active = activeDevices(device.username);
      const same = active.find((d) => bytesEqual(d.publicKey, device.publicKey));
      if (same) throw new DeviceStoreError("KEY_LINKED", `this key is already device ${same.deviceId}`);
      if (active.length >= maxDevices) throw new DeviceStoreError("DEVICES_FULL", `${device.username} has ${active.length} devices`);
      if (devicesOf.get(device.username)?.has(device.deviceId)) throw new DeviceStoreError("DEVICE_TAKEN", "device id taken");
      put(device);
      link.approved = { deviceId: device.deviceId, keyIndex: device.keyIndex, credential: device.credential.slice() };
      link.expiresAt = answerUntil;
      return copyDevice(device);
    },
    async registerDevice({ device, maxDevices }) {
      const existing = devicesOf.get(device.username)?.get(device.deviceId);
      if (existing) {
        if (existing.revokedAt !== null || !bytesEqual(existing.publicKey, device.publicKey)) {
          throw new DeviceStoreError("DEVICE_TAKEN", existing.revokedAt !== null ? "this device was revoked" : "this device id has another key");
        }
        if (device.keyIndex >= existing.keyIndex) {
          existing.keyIndex = device.keyIndex;
          existing.credential = device.credential.slice();
        }
        if (device.name !== null) existing.name = device.name;
        return copyDevice(existing);
      }
      const active = activeDevices(device.username);
      const same = active.find((d) => bytesEqual(d.publicKey, device.publicKey));
      if (same) throw new DeviceStoreError("KEY_LINKED", `this key is already device ${same.deviceId}`);
      if (active.length >= maxDevices) throw new DeviceStoreError("DEVICES_FULL", `${device.username} has ${active.length} devices`);
      put(device);
      return copyDevice(device);
    },
    async device(username, deviceId) {
      const found = devicesOf.get(username)?.get(deviceId);
      return found ? copyDevice(found) : null;
    },
    async devices(username) {
      return [...(devicesOf.get(username)?.values() ?? [])].sort((a, b) => a.linkedAt - b.linkedAt).map(copyDevice);
    },
    async revokeDevice({ username, deviceId, now }) {
      const found = devicesOf.get(username)?.get(deviceId);
      if (!found) return null;
      found.revokedAt ??= now;
      return copyDevice(found);
    },
    async updateCredential({ username, deviceId, keyIndex, credential }) {
      const found = devicesOf.get(username)?.get(deviceId);
      if (!found || found.revokedAt !== null || keyIndex < found.keyIndex) return false;
      found.keyIndex = keyIndex;
      found.credential = credential.slice();
      return true;
    },
    async touch(username, deviceId, now) {
      const found = devicesOf.get(username)?.get(deviceId);
      if (found) found.lastSeenAt = Math.max(found.lastSeenAt ?? 0, now);
    },
    async sweep({ now, revokedBefore }) {
      let dropped = dropExpiredLinks(now);
      for (const [username, mine] of devicesOf) {
        for (const [deviceId, device] of mine) {
          if (device.revokedAt !== null && device.revokedAt < revokedBefore) {
            mine.delete(deviceId);
            dropped++;
          }
        }
        if (mine.size === 0) devicesOf.delete(username);
      }
      return dropped;
    },
    close: async () => undefined,
  };
}
