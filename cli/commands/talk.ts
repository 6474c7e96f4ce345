import readline from "node:readline";
import { ChatError } from "../../protocol/errors";
import type { ServerFrame } from "../../protocol/wire";
import type { LogEntryWire } from "../../protocol/wire-v2";
import { RelayConnection, reconnectDelayMs, type ConnectionDeps } from "../connection";
import type { Context } from "../context";
import { describeError, parseUsername } from "../errors";
import { inertLine } from "../output";
import { Messenger, advances, describeWaiting, formatMessage, snippet, waitingMessages, type DeliveryState, type MessengerDeps } from "../messaging";
import { MlsChat, type MlsChatDeps, type SendResult } from "../mls/chat";
import type { GroupEvent } from "../../client-core/mls-device";
import { SocketAppends } from "../../client-core/socket-appends";
import { onGroupNotifications } from "../mls/group-notifications";
import { printGroupEvent, printMlsMessage, type PrintTarget } from "../mls/print";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { requireSession } from "../session";
import { groupConversation } from "../stores";

const RECENT = 20;
/** How long leaving waits for lines still being handed to the relay. */
const QUIT_FLUSH_MS = 10_000;
/**
 * How often a long conversation re-reads the user's own account on chain (one cheap read): a reset started
 * with a stolen password can only be cancelled while its delay runs, so an open talk must not hide it.
 */
const OWN_ACCOUNT_CHECK_MS = 120_000;
/**
 * The relay's group notices are hints that may be lost (a dropped socket, a busy relay): this often the
 * conversation asks the Delivery Service itself whether there is news, and, while some sent lines are not
 * yet delivered, how far the other members have read (reading moves no notice to the sender).
 */
const POLL_MS = 4_000;
/** Log entries handed with notices kept per group until the next catch-up; past it the log is read. */
const MAX_HANDED_ENTRIES = 100;

/** Errors no reconnect can cure: the conversation ends with them. */
const FATAL_CODES = new Set(["SESSION_EXPIRED", "UNAUTHORIZED", "CERTIFICATE_CHANGED", "USAGE", "NOT_LOGGED_IN", "WRONG_KEY"]);

const sleep = (ms: number, abort: Promise<void>) => Promise.race([new Promise<void>((resolve) => setTimeout(resolve, ms).unref()), abort]);

export type TalkDeps = MlsChatDeps & MessengerDeps & ConnectionDeps & OwnAccountDeps & Pick<Context, "lines" | "options" | "sessions">;

/**
 * chat talk USER, or chat talk --group NAME: a live conversation on MLS. Recent history first; then each
 * line typed goes to the outbox and out in order, and the other members' messages appear as they arrive
 * (the relay's group notices say when to read the group's log; a slow poll covers lost notices). Messages
 * of other conversations are left unread, for chat inbox. A one-to-one chat with no group yet is started
 * by the first line typed, or joined when the peer's welcome arrives.
 * A relay restart or network drop does not end it: it reconnects with capped backoff, lines typed
 * meanwhile wait in the outbox and go out in order once connected, and the log is read again. Each sent
 * line shows its state as it changes: sending, stored on the relay, delivered (every other member's device
 * has read past it). Envelope v1 messages from the peer (an older client) are still opened and shown.
 * With a terminal, readline keeps the typed line intact around incoming lines; without one (scripts,
 * tests) lines are read from standard input. /quit, Ctrl-D or Ctrl-C leaves.
 */
export async function talk(ctx: TalkDeps, rawPeer?: string): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  const me = session.username;
  const groupName = ctx.options.group;
  if (groupName !== undefined && rawPeer !== undefined) throw new ChatError("USAGE", "with --group, give no user: chat talk --group NAME");
  if (groupName === undefined && rawPeer === undefined) throw new ChatError("USAGE", "usage: chat talk USER (or chat talk --group NAME)");
  const peer = rawPeer === undefined ? undefined : parseUsername(rawPeer);
  if (peer === me) throw new ChatError("USAGE", "a conversation needs another user");
  await checkOwnAccount(ctx, me);
  const messenger = new Messenger(ctx, session);
  if (peer) await messenger.book.current(peer); // check (and announce) the peer's key before anything else

  // The conversation holds the relay's socket: its lines and cursor moves go over it while it is open
  // (a frame each way instead of an HTTPS request), over HTTP otherwise.
  const live: { conn?: RelayConnection } = {};
  const socket = new SocketAppends({ send: (text) => live.conn?.sendText(text) ?? false });
  const chat = await MlsChat.open(ctx, session, socket);
  // Welcomes that wait (the peer started this chat, or this user was added to the group) are joined first.
  const startEvents = await chat.device.joinWelcomes();
  /** The history key of this conversation, and the outbox's `to` for it. */
  const conversation = peer ?? groupConversation(await findGroup(chat, groupName!, startEvents));
  const where = peer ? inertLine(peer) : chat.label(conversation.slice(1));
  const isOurs = (groupId: string) => chat.conversationOf(groupId) === conversation;
  // A one-to-one chat may have more than one group (both sides started one at once): all are watched.
  const ourGroups = () => chat.device.groups().filter((g) => !g.removed && !g.left && isOurs(g.groupId)).map((g) => g.groupId);

  // Texts read while looking for the group: this conversation's are in its history now, shown below.
  const readEarly = chat.take().filter((m) => m.conversation !== conversation);
  for (const entry of ctx.history.read(me, conversation).slice(-RECENT)) {
    const sender = entry.direction === "out" ? me : (entry.from ?? peer ?? "?");
    ctx.out.data(
      { type: "history", id: entry.id, from: sender, body: entry.body, timestamp: entry.timestamp, ...(entry.group ? { groupId: entry.group } : {}) },
      formatMessage({ sender: peer ? sender : `${where} ${sender}`, body: entry.body, timestamp: entry.timestamp }),
    );
  }

  // Early frames: the other members' lines appear as the relay starts storing them, not once it has.
  let conn = await RelayConnection.open(ctx, session, { early: true });
  const tty = Boolean(process.stdin.isTTY) && !ctx.options.passwordStdin;
  const prompt = `${me}> `;
  const rl = tty ? readline.createInterface({ input: process.stdin, output: process.stderr, prompt }) : undefined;
  const aroundPrompt = (write: () => void) => {
    if (rl) {
      readline.clearLine(process.stderr, 0);
      readline.cursorTo(process.stderr, 0);
    }
    write();
    rl?.prompt(true);
  };
  const show = (object: Record<string, unknown>, text: string) => aroundPrompt(() => ctx.out.data(object, text));
  const note = (text: string) => aroundPrompt(() => ctx.out.info(text));
  const target: PrintTarget = { data: show, warn: (warning, loud) => aroundPrompt(() => ctx.out.warn(warning, loud)) };
  const showEvent = (event: GroupEvent) => {
    if (isOurs(event.groupId)) printGroupEvent(target, chat, event);
    else if (event.kind === "joined") note(`(${chat.describeEvent(event)}: its messages are for chat inbox)`);
  };
  /** Prints the texts the device saved since last asked: catching up, and sending (which catches up first). */
  const showFresh = () => {
    // Only this conversation's groups are read here; should another's text come along, it is shown too
    // (it is in the history now, so chat inbox would not show it).
    for (const m of chat.take()) printMlsMessage(target, chat, m);
  };
  for (const m of readEarly) printMlsMessage(target, chat, m);
  for (const event of startEvents) showEvent(event);

  // Delivery state of each line sent in this conversation, shown as it moves forward only.
  const states = new Map<string, { state: DeliveryState; body: string }>();
  /** Lines stored on the relay and not yet read by every other member: their group and log position. */
  const undelivered = new Map<string, { groupId: string; seq: number }>();
  const advance = (id: string, state: DeliveryState) => {
    const known = states.get(id);
    if (!known || !advances(known.state, state)) return;
    known.state = state;
    const text =
      state === "stored"
        ? `  ✓ stored on the relay for ${where}: "${snippet(known.body)}"`
        : peer
          ? `  ✓✓ delivered to ${where}'s device: "${snippet(known.body)}"`
          : `  ✓✓ delivered to everyone in ${where}: "${snippet(known.body)}"`;
    show({ type: "status", id, to: conversation, status: state }, text);
    if (state === "delivered") undelivered.delete(id);
  };
  const checkDelivered = async () => {
    for (const groupId of new Set([...undelivered.values()].map((u) => u.groupId))) {
      const upTo = await chat.deliveredUpTo(groupId);
      for (const [id, u] of [...undelivered]) if (u.groupId === groupId && u.seq <= upTo) advance(id, "delivered");
    }
  };

  // The owner's self-check again while talking: one at a time, its own failure only a note.
  let checkingOwnAccount = false;
  const recheckOwnAccount = () => {
    if (checkingOwnAccount) return;
    checkingOwnAccount = true;
    checkOwnAccount(ctx, me)
      .catch((error) => note(`could not check ${me} on chain: ${describeError(error).message}`))
      .finally(() => (checkingOwnAccount = false));
  };
  const ownAccountTimer = setInterval(recheckOwnAccount, OWN_ACCOUNT_CHECK_MS);
  ownAccountTimer.unref();

  let quitting = false;
  let quit!: () => void;
  const quitSignal = new Promise<void>((resolve) => (quit = resolve));
  let fatal: ChatError | undefined;
  let presenceShown = false;
  let receiving = Promise.resolve();
  const endWith = (error: ChatError) => {
    fatal ??= error;
    quit();
  };
  /** A failure of background work: fatal ones end the talk, a lost relay waits for the reconnect, others are told. */
  const failed = (what: string) => (error: unknown) => {
    const { code, message } = describeError(error);
    if (FATAL_CODES.has(code) && error instanceof ChatError) endWith(error);
    else if (code !== "RELAY_UNREACHABLE") note(`${what}: ${code}: ${message}`);
  };

  /**
   * One worker at a time for each job, with a rerun when asked again meanwhile: lines go out in order, and
   * a burst of notices costs one catch-up.
   */
  const serial = (work: () => Promise<void>) => {
    let running: Promise<void> | undefined;
    let again = false;
    return (): Promise<void> => {
      if (running) {
        again = true;
        return running;
      }
      running = (async () => {
        do {
          again = false;
          await work();
        } while (again);
      })().finally(() => (running = undefined));
      return running;
    };
  };

  // The same refusal of a waiting line is told once, not on every retry.
  const told = new Set<string>();
  const pump = serial(async () => {
    if (!conn.isOpen) return;
    const ids = new Set(ctx.outbox.list(me).filter((e) => e.v === 2 && e.to === conversation).map((e) => e.id));
    if (ids.size === 0) return;
    let results: SendResult[];
    try {
      results = await chat.flushOutbox(ids);
    } catch (error) {
      failed("could not send")(error);
      return;
    } finally {
      showFresh();
    }
    for (const result of results) {
      const id = result.entry.id;
      if (!states.has(id)) states.set(id, { state: "sending", body: result.entry.body });
      if (result.status) {
        // Accepted is shown even when every member had read it by the time the relay was asked.
        advance(id, "stored");
        if (result.status === "stored" && result.groupId && result.seq !== undefined) undelivered.set(id, { groupId: result.groupId, seq: result.seq });
        else advance(id, result.status);
      } else if (result.error && FATAL_CODES.has(result.error.code)) {
        endWith(result.error);
      } else if (result.error && result.error.code !== "RELAY_UNREACHABLE" && !told.has(`${id} ${result.error.code}`)) {
        told.add(`${id} ${result.error.code}`);
        note(`not sent to ${where}: ${result.error.code}: ${result.error.message}`);
      }
    }
  });

  let joinWanted = false;
  /**
   * Entries the relay handed along with its notices, per group, in arrival order: the next catch-up applies
   * them instead of reading the log when they follow the device's cursor (MlsDevice.applyNotice decides).
   */
  const handed = new Map<string, LogEntryWire[]>();
  const hand = (groupId: string, entry: LogEntryWire) => {
    const list = handed.get(groupId) ?? [];
    // A gap (a notice lost or merged) makes the list useless past it: start again from this entry.
    const last = list[list.length - 1];
    if (last && entry.seq !== last.seq + 1) list.length = 0;
    if (list.length < MAX_HANDED_ENTRIES) list.push(entry);
    handed.set(groupId, list);
  };
  /** Reads this conversation's groups past the device's cursor (joining waiting welcomes first when asked), and the delivery states. */
  const catchUp = serial(async () => {
    if (!conn.isOpen) return;
    try {
      if (joinWanted) {
        joinWanted = false;
        for (const event of await chat.device.joinWelcomes()) showEvent(event);
      }
      for (const groupId of ourGroups()) {
        const entries = handed.get(groupId);
        handed.delete(groupId);
        const events = entries ? await chat.applyNotice(groupId, entries) : await chat.catchUp(groupId);
        showFresh();
        for (const event of events) showEvent(event);
      }
      if (undelivered.size > 0) await checkDelivered();
    } catch (error) {
      showFresh();
      failed("could not read the conversation")(error);
    }
  });
  const refresh = (join = false) => {
    if (join) joinWanted = true;
    return catchUp();
  };

  /** The fallback for lost notices: one cheap question to the Delivery Service, then only the work it calls for. */
  let polling = false;
  const poll = async () => {
    if (polling || quitting || !conn.isOpen) return;
    polling = true;
    try {
      const news = await chat.device.ds.sync();
      const ours = new Set(ourGroups());
      if (news.welcomes.length > 0 || news.groups.some((g) => ours.has(g.groupId))) await refresh(news.welcomes.length > 0);
      else if (undelivered.size > 0) await checkDelivered();
      if (ctx.outbox.list(me).some((e) => e.v === 2 && e.to === conversation)) await pump();
    } catch (error) {
      failed("could not ask the relay for news")(error);
    } finally {
      polling = false;
    }
  };
  const pollTimer = setInterval(() => void poll(), POLL_MS);
  pollTimer.unref();

  const listen = (c: RelayConnection) => {
    live.conn = c;
    c.onFrame((frame) => socket.handle(frame));
    // Appends unanswered when the socket goes are sent again over HTTP with the same id.
    c.onClose(() => socket.closed());
    onGroupNotifications(c, {
      // After this frame's other handlers: the one below keeps the entry it may carry for the catch-up.
      group: (groupId) => {
        if (isOurs(groupId)) queueMicrotask(() => void refresh());
      },
      // A welcome into a group this device does not know yet: perhaps the peer starting this chat.
      welcome: (groupId) => {
        if (!chat.device.groups().some((g) => g.groupId === groupId)) void refresh(true);
      },
    });
    c.onFrame((frame: ServerFrame) => {
      if (frame.type === "group" && frame.entry && isOurs(frame.groupId)) {
        hand(frame.groupId, frame.entry);
      } else if (frame.type === "early" && isOurs(frame.groupId)) {
        // Shown now if the device can apply it; if not, its log entry brings it as usual.
        chat.applyEarly(frame.groupId, frame.entry).then(
          (events) => {
            showFresh();
            for (const event of events) showEvent(event);
          },
          (error) => {
            showFresh();
            failed("could not read an early message")(error);
          },
        );
      } else if (peer && frame.type === "message" && frame.from === peer) {
        // An older client of the peer's, on envelope v1.
        receiving = receiving
          .then(async () => {
            const inner = await messenger.receive(c, frame);
            if (inner) show({ type: "message", id: inner.id, from: inner.sender, body: inner.body, timestamp: inner.timestamp }, formatMessage(inner));
          })
          .catch((error) => note(`could not read a message: ${describeError(error).message}`));
      } else if (peer && frame.type === "presence" && frame.user === peer && !presenceShown) {
        presenceShown = true;
        note(frame.online ? `${peer} is online.` : `${peer} is not connected to this relay now: your messages wait for ${peer} on the relay.`);
      }
    });
  };

  /** Keeps a connection open until leaving: after a drop, "reconnecting…", retries with capped backoff, then catches up and sends the outbox. */
  const stayConnected = async () => {
    for (;;) {
      listen(conn);
      if (peer) {
        try {
          conn.send({ type: "presence", user: peer });
        } catch {
          /* closed already: handled below */
        }
        // Envelope v1 lines of an older run, still waiting, go out over this connection.
        const v1 = new Set(ctx.outbox.list(me).filter((e) => e.envelope !== undefined && e.to === peer).map((e) => e.id));
        if (v1.size > 0) void messenger.flushOutbox(conn, v1).catch(() => undefined);
      }
      void refresh(true).then(() => pump());
      const closed = new Promise<ChatError | undefined>((resolve) => conn.onClose((error) => resolve(error)));
      const error = await Promise.race([closed, quitSignal.then(() => undefined)]);
      if (quitting) return;
      if (error && FATAL_CODES.has(error.code)) return endWith(error);
      note("connection to the relay lost; reconnecting…");
      for (let attempt = 0; ; attempt++) {
        await sleep(reconnectDelayMs(attempt), quitSignal);
        if (quitting) return;
        try {
          conn = await RelayConnection.open(ctx, session, { early: true });
          note("reconnected.");
          recheckOwnAccount();
          break;
        } catch (error) {
          const { code } = describeError(error);
          if (FATAL_CODES.has(code)) return endWith(error as ChatError);
          if (attempt === 0 || attempt % 5 === 4) note(`still reconnecting… (${code}); what you type is kept and sent once connected`);
        }
      }
    }
  };

  const lines = rl
    ? (() => {
        const pending: string[] = [];
        const waiters: ((line: string | undefined) => void)[] = [];
        let closed = false;
        rl.on("line", (line) => {
          // The terminal echoed the line after the prompt; it is shown once, as a message, instead.
          const rows = Math.max(1, Math.ceil((prompt.length + line.length) / Math.max(1, process.stderr.columns ?? 80)));
          readline.moveCursor(process.stderr, 0, -rows);
          readline.clearScreenDown(process.stderr);
          if (waiters.length) waiters.shift()!(line);
          else pending.push(line);
        });
        rl.on("SIGINT", () => rl.close());
        rl.on("close", () => {
          closed = true;
          waiters.splice(0).forEach((w) => w(undefined));
        });
        return () => (pending.length ? Promise.resolve(pending.shift()) : closed ? Promise.resolve(undefined) : new Promise<string | undefined>((r) => waiters.push(r)));
      })()
    : () => ctx.lines.next();

  ctx.out.info(`Talking with ${where}. Type a message and press Enter; /quit or Ctrl-D to leave.`);
  if (peer) {
    // Earlier envelope v1 messages that have not reached the peer: told once, when the conversation opens.
    waitingMessages(ctx, session, [peer]).then(
      (waiting) => waiting.forEach((m) => note(describeWaiting(m))),
      () => undefined,
    );
  }
  const connection = stayConnected();
  rl?.prompt();
  try {
    for (;;) {
      const line = await Promise.race([lines(), quitSignal.then(() => undefined)]);
      if (line === undefined || line.trim() === "/quit") break;
      if (line.trim() === "") {
        rl?.prompt();
        continue;
      }
      try {
        if (peer) {
          await messenger.checkSelf().catch((error: unknown) => {
            // Without the chain our own key cannot be re-checked; the relay checked it at login.
            if (!(error instanceof ChatError && error.code === "CHAIN_UNAVAILABLE")) throw error;
          });
          // A long conversation must notice (and tell) a key the peer rotated or reset meanwhile.
          await messenger.recheckPeerKey(peer);
          await messenger.book.current(peer);
        }
        const entry = chat.queue(conversation, line);
        states.set(entry.id, { state: "sending", body: line });
        show(
          { type: "sent", id: entry.id, to: conversation, status: "sending", v: 2 },
          formatMessage({ sender: peer ? me : `${where} ${me}`, body: line, timestamp: entry.timestamp }, conn.isOpen ? "sending…" : "waiting for the relay…"),
        );
        // Awaited so that lines from a script go out in order before the next is read; a lost relay ends
        // the wait at once and leaves the line in the outbox for the reconnect.
        await pump();
      } catch (error) {
        const { code, message } = describeError(error);
        if (FATAL_CODES.has(code) && error instanceof ChatError) {
          endWith(error);
          break;
        }
        note(`not sent: ${code}: ${message}`);
      }
    }
    // Leaving: give lines still on their way a moment to be accepted.
    if (conn.isOpen && !fatal) await Promise.race([pump(), new Promise((resolve) => setTimeout(resolve, QUIT_FLUSH_MS).unref())]);
    await receiving;
  } finally {
    clearInterval(ownAccountTimer);
    clearInterval(pollTimer);
    quitting = true;
    quit();
    rl?.close();
    await connection;
    await conn.close();
    // Background reads still running finish before the device is left (its state is saved after each page).
    await Promise.race([catchUp(), new Promise((resolve) => setTimeout(resolve, QUIT_FLUSH_MS).unref())]).catch(() => undefined);
  }
  const left = ctx.outbox.list(me).filter((e) => e.to === conversation).length;
  if (left > 0) ctx.out.info(`${left} message${left === 1 ? "" : "s"} wait in the outbox; they are sent the next time you run talk, send or inbox.`);
  if (fatal) throw fatal;
}

/**
 * The group called `name`. A group's name travels inside it (an application message after the commit that
 * added this device), so a group just joined has none yet: when no group matches, the groups without a name
 * are read first (their events are added to `events`), then the name is looked for again.
 */
async function findGroup(chat: MlsChat, name: string, events: GroupEvent[]): Promise<string> {
  try {
    return chat.resolveGroup(name);
  } catch (error) {
    if (!(error instanceof ChatError) || error.code !== "NOT_FOUND") throw error;
    const unnamed = chat.device.groups().filter((g) => !g.removed && !g.left && g.peer === undefined && g.name === undefined);
    if (unnamed.length === 0) throw error;
    for (const group of unnamed) events.push(...(await chat.catchUp(group.groupId)));
    return chat.resolveGroup(name);
  }
}
