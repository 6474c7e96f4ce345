import type { KeyBook } from "./key-book";

/**
 * A view of `keyBook` that reads each user's key count once until `refresh()`: one pass over many
 * groups (checking every member's leaf after a sync) then costs one count per user, not one per leaf.
 * Records are passed through (they never change once written).
 */
export function snapshotKeyBook(keyBook: KeyBook): KeyBook & { refresh(): void } {
  let counts = new Map<string, Promise<number>>();
  return {
    keyRecord: (username, index) => keyBook.keyRecord(username, index),
    keyCount(username) {
      let count = counts.get(username);
      if (!count) {
        count = keyBook.keyCount(username);
        counts.set(username, count);
        // A failed read is not remembered: the next check asks again.
        count.catch(() => counts.delete(username));
      }
      return count;
    },
    refresh() {
      counts = new Map();
    },
  };
}
