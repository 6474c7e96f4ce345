import { getAddress } from "ethers";
import type { KeyBook, KeyRecord } from "./key-book";

/** A KeyBook held in memory, for tests and tools; `append` plays the chain adding a record. */
export function memoryKeyBook(): KeyBook & { append(username: string, record: KeyRecord): number } {
  const histories = new Map<string, KeyRecord[]>();
  return {
    async keyRecord(username, index) {
      return histories.get(username)?.[index];
    },
    async keyCount(username) {
      return histories.get(username)?.length ?? 0;
    },
    append(username, record) {
      const history = histories.get(username) ?? [];
      history.push({ ...record, address: getAddress(record.address) });
      histories.set(username, history);
      return history.length - 1;
    },
  };
}
