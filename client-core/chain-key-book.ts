/**
 * The KeyBook that MLS credentials are checked against, read from the client's own chain endpoint, never
 * from the relay. A record at an index never changes once written (the history only grows), so records are
 * remembered; the count is read each time, since rotations and resets move the current key.
 */
import { isChatError } from "../protocol/errors";
import type { KeyBook, KeyRecord } from "../protocol/mls";
import type { RegistryReader } from "./chain-reader";

export function chainKeyBook(registry: Pick<RegistryReader, "keyCount" | "keyRecord">): KeyBook {
  const records = new Map<string, KeyRecord>();
  const keyCount = async (username: string): Promise<number> => {
    try {
      return await registry.keyCount(username);
    } catch (error) {
      // An unknown user has no keys: its credentials are refused, which is not a failure of the check.
      if (isChatError(error) && error.code === "UNKNOWN_USER") return 0;
      throw error;
    }
  };
  return {
    keyCount,
    async keyRecord(username, index) {
      if (!Number.isSafeInteger(index) || index < 0) return undefined;
      const key = `${username}\n${index}`;
      const known = records.get(key);
      if (known) return known;
      if (index >= (await keyCount(username))) return undefined;
      const record = await registry.keyRecord(username, index);
      const out: KeyRecord = { address: record.address, kind: record.kind, timestamp: record.timestamp };
      records.set(key, out);
      return out;
    },
  };
}
