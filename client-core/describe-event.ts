/**
 * One line for people about a group event (a member added or removed, a rename, a key change followed),
 * the same words in every client; undefined when there is nothing a person needs to see.
 */
import type { GroupEvent } from "./mls-device";

export function describeGroupEvent(
  event: GroupEvent,
  view: {
    me: string;
    /** how a conversation is named for people (the peer, or "#name") */
    label: (groupId: string) => string;
    /** makes a name from the network safe where it is shown (a terminal strips control characters) */
    inert: (text: string) => string;
  },
): string | undefined {
  const { me, inert } = view;
  const where = view.label(event.groupId);
  const who = (name: string) => (name === me ? "you" : inert(name));
  const list = (names: string[]) => names.map(who).join(", ");
  switch (event.kind) {
    case "joined":
      return where.startsWith("#") ? `you joined ${where}` : `new chat with ${where}`;
    case "commit":
      if (event.added.length === 0 && event.removed.length === 0 && (event.devicesAdded.length > 0 || event.devicesRemoved.length > 0)) {
        // Another device of a member: as Signal tells of one, so that a device nobody expected is noticed.
        const changes = [
          ...event.devicesAdded.map((u) => `${who(u)} added a device`),
          ...event.devicesRemoved.map((u) => `${who(u)} removed a device`),
        ];
        return `${changes.join("; ")} in ${where}`;
      }
      if (event.added.length > 0 && event.removed.length > 0) return `${who(event.by)} added ${list(event.added)} and removed ${list(event.removed)} in ${where}`;
      if (event.added.length > 0) return `${who(event.by)} added ${list(event.added)} to ${where}`;
      if (event.removed.length > 0) return `${who(event.by)} removed ${list(event.removed)} from ${where}`;
      return undefined; // a key update: nothing a person needs to see
    case "named":
      // the name this event set, which a later rename in the same catch-up may have changed since
      return `${who(event.by)} named the group #${inert(event.name)}`;
    case "leaving":
      return `${who(event.by)} left ${where}`;
    case "removed":
      return event.by ? `${who(event.by)} removed you from ${where}` : `you are no longer in ${where}`;
    case "refused":
      return `refused an entry of ${where}: ${event.code}: ${event.message}`;
    case "reauthorized":
      return undefined; // this device following its own rotation: rotate-key says so
    case "members-replaced":
      return `${list(event.removed)}: a device whose key was replaced on chain left ${where}; ${event.added.length > 0 ? `current devices of ${list(event.added)} joined` : "no current device joined yet"}`;
    case "own-devices": {
      const parts = [event.added > 0 ? `${event.added} of your devices joined` : "", event.removed > 0 ? `${event.removed} revoked device(s) removed` : ""].filter(Boolean);
      return `${parts.join(", ")} in ${where}`;
    }
    case "key-change-failed":
      return `could not follow a key change${event.groupId ? ` in ${where}` : ""} (retried at the next sync): ${event.code}: ${event.message}`;
  }
}
