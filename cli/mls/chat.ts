/**
 * Conversations on MLS for the commands: one-to-one chats (two-member groups) and named groups over this
 * user's device (device.ts). What it adds to the device: the outbox (a message waits there until the relay
 * accepts it, and is sealed only then, for the epoch it goes out in), the history (each message saved before
 * the device's cursor moves past it, so a crash shows it again at most, and a payload id seen before is
 * dropped), names for groups, and delivery states from the other members' cursors.
 */
import { ChatError, isChatError } from "../../protocol/errors";
import { MAX_BODY_BYTES, newPayloadId } from "../../protocol/mls";
import { assertUsername } from "../../protocol/username";
import type { Context } from "../context";
import { inertLine } from "../output";
import { Messenger, type MessengerDeps } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { requireSession, type Session } from "../session";
import { groupConversation, type HistoryEntry, type OutboxEntry } from "../stores";
import { MAX_STATUS_IDS, type EarlyEntry } from "../../protocol/wire";
import type { LogEntryWire } from "../../protocol/wire-v2";
import type { WaitingMessage } from "../messaging";
import { describeGroupEvent } from "../../client-core/describe-event";
import { MlsDevice, type GroupEvent, type ReceivedMessage } from "../../client-core/mls-device";
import type { SocketAppends } from "../../client-core/socket-appends";
import { openSessionDevice, type SessionDeviceDeps } from "./session-device";

export type MlsChatDeps = SessionDeviceDeps & Pick<Context, "history" | "outbox" | "out">;

/** A message saved to the history by this run (not seen before). */
export interface ChatMessage {
  /** the peer of a one-to-one chat, or the group's conversation key */
  conversation: string;
  /** the group's name, for a named group */
  groupName?: string;
  groupId: string;
  from: string;
  id: string;
  sentAt: number;
  /** its position in the group's log; absent when it came in an early frame, before it had one */
  seq?: number;
  body: string;
  /** sent by this user from another of its devices: saved and shown as sent, not received */
  fromOtherDevice?: boolean;
}

export interface SendResult {
  entry: OutboxEntry;
  groupId?: string;
  seq?: number;
  status?: "stored" | "delivered";
  error?: ChatError;
}

export class MlsChat {
  /** messages saved by the device's deliver callback since the last take() */
  private fresh: ChatMessage[] = [];

  private constructor(
    private readonly ctx: MlsChatDeps,
    readonly session: Session,
    private readonly holder: { device?: MlsDevice },
  ) {}

  /** `socket`: the relay's WebSocket, when the command holds one (small messages and cursor moves go over it). */
  static async open(ctx: MlsChatDeps, session: Session, socket?: SocketAppends): Promise<MlsChat> {
    const holder: { device?: MlsDevice } = {};
    const chat = new MlsChat(ctx, session, holder);
    holder.device = await openSessionDevice(ctx, session, (messages) => chat.save(messages), socket);
    return chat;
  }

  get device(): MlsDevice {
    return this.holder.device!;
  }

  get me(): string {
    return this.session.username;
  }

  /** The history key of a group: the peer of a one-to-one chat, else the group's key. */
  conversationOf(groupId: string): string {
    const group = this.device.groups().find((g) => g.groupId === groupId);
    return group?.peer ?? groupConversation(groupId);
  }

  /** How a conversation is named for people: the peer, or "#name" (or "#" and the id's start for an unnamed group). */
  label(groupId: string): string {
    const group = this.device.groups().find((g) => g.groupId === groupId);
    if (group?.peer) return inertLine(group.peer);
    return group?.name !== undefined ? `#${inertLine(group.name)}` : `#${groupId.slice(0, 8)}`;
  }

  /**
   * The group called `name` (its name, or the start of its id, at least 8 hex characters); USAGE when there
   * is none, or more than one.
   */
  resolveGroup(name: string): string {
    const live = this.device.groups().filter((g) => !g.removed && !g.left && g.peer === undefined);
    const byName = live.filter((g) => g.name === name);
    const matches = byName.length > 0 ? byName : /^[0-9a-f]{8,64}$/.test(name) ? live.filter((g) => g.groupId.startsWith(name)) : [];
    if (matches.length === 0) throw new ChatError("NOT_FOUND", `no group ${inertLine(name)} on this device: chat group list shows yours`);
    if (matches.length > 1) {
      throw new ChatError("USAGE", `${matches.length} groups are called ${inertLine(name)}: name one by the start of its id (${matches.map((g) => g.groupId.slice(0, 8)).join(", ")})`);
    }
    return matches[0].groupId;
  }

  /**
   * Saves received texts to the history unless their payload id was seen: runs before the cursor moves on.
   * A text this user sent from another device is saved as sent ("out"), with no delivery state to follow.
   */
  private save(messages: ReceivedMessage[]): void {
    const seen = new Map<string, Set<string>>();
    const groups = new Map(this.device.groups().map((g) => [g.groupId, g]));
    for (const m of messages) {
      const group = groups.get(m.groupId);
      const conversation = group?.peer ?? groupConversation(m.groupId);
      let ids = seen.get(conversation);
      if (!ids) {
        ids = new Set(this.ctx.history.read(this.me, conversation).map((e) => e.id));
        seen.set(conversation, ids);
      }
      if (ids.has(m.id)) continue;
      ids.add(m.id);
      const inGroup = conversation.startsWith("#");
      const fromOtherDevice = m.from === this.me;
      this.ctx.history.append(this.me, {
        id: m.id,
        direction: fromOtherDevice ? "out" : "in",
        peer: conversation,
        ...(inGroup && !fromOtherDevice ? { from: m.from } : {}),
        body: m.body,
        timestamp: m.sentAt,
        at: Date.now(),
        v: 2,
        group: m.groupId,
        seq: m.seq,
      });
      this.fresh.push({
        conversation,
        groupName: inGroup ? group?.name : undefined,
        groupId: m.groupId,
        from: m.from,
        id: m.id,
        sentAt: m.sentAt,
        seq: m.seq,
        body: m.body,
        ...(fromOtherDevice ? { fromOtherDevice } : {}),
      });
    }
  }

  /** The messages saved since the last call, in arrival order. */
  take(): ChatMessage[] {
    const out = this.fresh;
    this.fresh = [];
    return out;
  }

  /** Keeps this device's key packages on the relay, so that others can start chats while it is offline. */
  publishKeyPackages(): Promise<{ oneTime: number; lastResort: boolean }> {
    return this.device.ensureKeyPackages();
  }

  /** Joins waiting welcomes and catches up every group with news; the new texts are in take(). */
  sync(): Promise<GroupEvent[]> {
    return this.device.sync().then((result) => result.events);
  }

  /** Catches up one group (a conversation being watched). */
  async catchUp(groupId: string): Promise<GroupEvent[]> {
    const result = await this.device.catchUp(groupId);
    await this.device.honourLeaveRequests(groupId);
    return result.events;
  }

  /** Catches up one group from entries a notice handed along, or from its log when they are not the next ones. */
  async applyNotice(groupId: string, entries: readonly LogEntryWire[]): Promise<GroupEvent[]> {
    const result = await this.device.applyNotice(groupId, entries);
    await this.device.honourLeaveRequests(groupId);
    return result.events;
  }

  /**
   * Applies a message the relay handed on before storing it (an early frame), when the device can apply it
   * now; its text is in take(). Otherwise nothing happens and the log brings it as usual.
   */
  async applyEarly(groupId: string, entry: EarlyEntry): Promise<GroupEvent[]> {
    return (await this.device.applyEarly(groupId, entry)).events;
  }

  /** Puts a text for `peer` (a one-to-one chat) or a group (its conversation key) in the outbox. */
  queue(to: string, body: string): OutboxEntry {
    if (!to.startsWith("#")) assertUsername(to);
    if (to === this.me) throw new ChatError("BAD_REQUEST", "a one-to-one chat needs another user");
    const bytes = Buffer.byteLength(body, "utf8");
    if (bytes > MAX_BODY_BYTES) throw new ChatError("MESSAGE_TOO_LONG", `message too long: ${bytes} bytes, at most ${MAX_BODY_BYTES}`);
    const entry: OutboxEntry = { id: newPayloadId(), to, body, timestamp: Date.now(), v: 2 };
    this.ctx.outbox.put(this.me, entry);
    return entry;
  }

  /**
   * Sends the MLS entries of the outbox in order (`only`: just these ids). Each goes out in the current epoch
   * under its first id, so a retry after a lost answer is stored once and read once. An accepted entry moves
   * to the history; one that failed stays for the next run, except when it can never succeed.
   */
  async flushOutbox(only?: Set<string>): Promise<SendResult[]> {
    const results: SendResult[] = [];
    for (const entry of this.ctx.outbox.list(this.me).filter((e) => e.v === 2 && (!only || only.has(e.id)))) {
      results.push(await this.sendOne(entry));
      const last = results[results.length - 1];
      // The relay is gone: the rest waits too, in order.
      if (last.error?.code === "RELAY_UNREACHABLE") {
        for (const rest of this.ctx.outbox.list(this.me).filter((e) => e.v === 2 && e.id !== entry.id && (!only || only.has(e.id)) && !results.some((r) => r.entry.id === e.id))) {
          results.push({ entry: rest, error: last.error });
        }
        break;
      }
    }
    return results;
  }

  private async sendOne(entry: OutboxEntry): Promise<SendResult> {
    try {
      const groupId = entry.to.startsWith("#") ? entry.to.slice(1) : await this.device.startDirect(entry.to);
      const { seq } = await this.device.send(groupId, entry.body, { id: entry.id, sentAt: entry.timestamp });
      const status = (await this.deliveredUpTo(groupId)) >= seq ? "delivered" : "stored";
      const out: HistoryEntry = { id: entry.id, direction: "out", peer: entry.to, body: entry.body, timestamp: entry.timestamp, at: Date.now(), status, v: 2, group: groupId, seq };
      this.ctx.history.append(this.me, out);
      this.ctx.outbox.remove(this.me, entry.id);
      return { entry, groupId, seq, status };
    } catch (error) {
      if (!isChatError(error)) throw error;
      if (error.code === "NOT_FOUND" && !entry.to.startsWith("#") && !this.device.directGroup(entry.to)) {
        // No key package: the peer has no device on messages v2 yet. It may have one later.
        return { entry, error: new ChatError("NOT_FOUND", `${inertLine(entry.to)} has no device that can receive messages yet (they have not logged in with a current chat); the message waits in the outbox`) };
      }
      // Refusals that no retry cures: the peer is unknown or cannot be verified, or this device is out of the group.
      if (PERMANENT.has(error.code)) {
        this.ctx.outbox.remove(this.me, entry.id);
        return { entry, error };
      }
      return { entry, error: new ChatError(error.code, `${error.message}; the message waits in the outbox and is sent by the next send, inbox or talk`, error.details) };
    }
  }

  /**
   * The last log position every other member's device has read (the relay's cursors): a message at or
   * below it is delivered. The relay could lie about this; it only ever affects the ✓✓ shown.
   */
  async deliveredUpTo(groupId: string): Promise<number> {
    const { members } = await this.device.ds.members(groupId);
    const others = members.filter((m) => !(m.username === this.me && m.deviceId === this.device.deviceId));
    return others.length === 0 ? 0 : Math.min(...others.map((m) => m.cursor));
  }

  /**
   * This user's messages on MLS that the relay accepted and some other member's device has not read yet
   * (by the relay's cursors, asked once per group), for the conversations `conversations` (default: all).
   */
  async waiting(conversations: string[] = this.ctx.history.peers(this.me).concat(this.device.groups().map((g) => groupConversation(g.groupId)))): Promise<WaitingMessage[]> {
    const out: WaitingMessage[] = [];
    const readUpTo = new Map<string, number>();
    for (const conversation of new Set(conversations)) {
      const stored = this.ctx.history
        .read(this.me, conversation)
        .filter((e) => e.direction === "out" && e.v === 2 && e.status === "stored" && e.group !== undefined && e.seq !== undefined)
        .slice(-MAX_STATUS_IDS);
      for (const e of stored) {
        if (!readUpTo.has(e.group!)) readUpTo.set(e.group!, await this.deliveredUpTo(e.group!).catch(() => Number.MAX_SAFE_INTEGER));
        if (readUpTo.get(e.group!)! < e.seq!) {
          out.push({ id: e.id, to: conversation.startsWith("#") ? this.label(e.group!) : conversation, body: e.body, timestamp: e.timestamp, state: "pending" });
        }
      }
    }
    return out;
  }

  /** One line for people about a group event; undefined when there is nothing to say. */
  describeEvent(event: GroupEvent): string | undefined {
    return describeGroupEvent(event, { me: this.me, label: (groupId) => this.label(groupId), inert: inertLine });
  }
}

const PERMANENT = new Set(["UNKNOWN_USER", "NOT_FOUND", "KEY_UNVERIFIED", "KEY_MISMATCH", "NOT_GROUP_MEMBER", "UNKNOWN_GROUP", "MESSAGE_TOO_LONG", "BAD_REQUEST", "INVALID_USERNAME"]);

/**
 * After a login: opens (or creates) this user's MLS device here and keeps its key packages on the relay, so
 * that others can start chats with it while it is offline. A failure is a warning: the login itself stands.
 */
export async function publishDevice(ctx: MlsChatDeps, session: Session): Promise<void> {
  try {
    const chat = await MlsChat.open(ctx, session);
    await chat.publishKeyPackages();
  } catch (error) {
    if (!isChatError(error)) throw error;
    ctx.out.warn({ code: error.code, message: `could not publish this device's key packages (others cannot start a chat with it yet): ${error.message}` });
  }
}

export type ChatCommandDeps = MlsChatDeps & MessengerDeps & OwnAccountDeps & Pick<Context, "sessions">;

/**
 * What a messaging command starts with: the session, this user's own account and key re-checked on chain
 * (a pending reset is shown loudly; a key replaced elsewhere stops the command), and the MLS chat.
 */
export async function openChatCommand(ctx: ChatCommandDeps): Promise<{ session: Session; messenger: Messenger; chat: MlsChat }> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  await checkOwnAccount(ctx, session.username);
  const messenger = new Messenger(ctx, session);
  await messenger.checkSelf().catch((error: unknown) => {
    // Without the chain our own key cannot be re-checked; the relay checked it at login.
    if (!(error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE")) throw error;
  });
  return { session, messenger, chat: await MlsChat.open(ctx, session) };
}
