/**
 * How MLS messages and group events are shown, the same in `chat inbox` and `chat talk`: a one-to-one
 * message as a v1 one ("[time] peer: body"), a group message under "#name", a membership change, name,
 * join or refusal as a line of its own.
 */
import { formatMessage } from "../messaging";
import type { Output } from "../output";
import type { ChatMessage, MlsChat } from "./chat";
import type { GroupEvent } from "../../client-core/mls-device";

/** Where lines go: the command's Output, or a wrapper that keeps a prompt intact around them. */
export type PrintTarget = Pick<Output, "data" | "warn">;

/** One MLS message: as a v1 one for a one-to-one chat, under "#name" for a group. */
export function printMlsMessage(out: PrintTarget, chat: MlsChat, m: ChatMessage): void {
  const inGroup = m.conversation.startsWith("#");
  if (m.fromOtherDevice) {
    // Sent by this user from another device: shown as sent, to the conversation it went to.
    const to = inGroup ? `${chat.label(m.groupId)} you` : `you → ${m.conversation}`;
    out.data(
      { type: "sent", id: m.id, from: m.from, to: m.conversation, body: m.body, timestamp: m.sentAt, v: 2, groupId: m.groupId, fromOtherDevice: true, ...(inGroup ? { group: m.groupName ?? null } : {}) },
      formatMessage({ sender: to, body: m.body, timestamp: m.sentAt }, "from your other device"),
    );
    return;
  }
  const sender = inGroup ? `${chat.label(m.groupId)} ${m.from}` : m.from;
  out.data(
    { type: "message", id: m.id, from: m.from, body: m.body, timestamp: m.sentAt, v: 2, groupId: m.groupId, ...(inGroup ? { group: m.groupName ?? null } : {}) },
    formatMessage({ sender, body: m.body, timestamp: m.sentAt }),
  );
}

/** A membership change, a name, a join or a refusal, as a line of its own. */
export function printGroupEvent(out: PrintTarget, chat: MlsChat, event: GroupEvent): void {
  const text = chat.describeEvent(event);
  if (text === undefined) return;
  if (event.kind === "refused") {
    out.warn({ code: "GROUP_ENTRY_REFUSED", groupId: event.groupId, reason: event.code, message: text });
    return;
  }
  out.data({ type: "group-event", ...event, label: chat.label(event.groupId) }, `-- ${text}`);
}
