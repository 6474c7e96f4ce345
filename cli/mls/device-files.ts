/**
 * An MLS device's storage in the CLI's home: its documents as files under users/<name>/mls/ (written
 * atomically, mode 0600), and one operation at a time across processes through the lock file there.
 */
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { DeviceStore, type DeviceDocuments } from "../../client-core/device-store";
import type { DeviceStorage } from "../../client-core/mls-device";
import type { Home } from "../home";
import { DeviceLock } from "./device-lock";

function homeDocuments(home: Home, username: string): DeviceDocuments {
  const dir = home.userDir(username, "mls");
  return {
    read: <T>(name: string) => home.readJson<T>(path.join(dir, name)),
    write: (name, value) => home.writeJson(path.join(dir, name), value),
    list: (folder) => readdirSync(home.userDir(username, "mls", folder)),
  };
}

/** The storage MlsDevice.open takes, for `username` in `home`. */
export function homeDeviceStorage(home: Home, username: string): DeviceStorage {
  const lock = new DeviceLock(path.join(home.userDir(username, "mls"), "lock"));
  return { documents: homeDocuments(home, username), exclusive: (work) => lock.run(work) };
}

/** The sealed documents of `username`'s device in `home`, for reading outside a device (login, tests). */
export function homeDeviceStore(home: Home, username: string): DeviceStore {
  return new DeviceStore(homeDocuments(home, username), username);
}

/** Whether `username` has an MLS device in `home`, without creating anything there. */
export function homeHasDevice(home: Home, username: string): boolean {
  return existsSync(home.path("users", username, "mls", "device.json"));
}

/** Whether `home` holds a linked device of `username` (its device secret file). */
export function homeHasLinkedDevice(home: Home, username: string): boolean {
  return existsSync(home.path("users", username, "mls", "device-secret.json"));
}
