import readline from "node:readline";
import { ChatError } from "../../protocol/errors";
import type { ServerFrame } from "../../protocol/wire";
import { RelayConnection, reconnectDelayMs, type ConnectionDeps } from "../connection";
import type { Context } from "../context";
import { describeError, parseUsername } from "../errors";
import { inertLine } from "../output";
import { Messenger, advances, describeWaiting, formatMessage, snippet, waitingMessages, type DeliveryState, type MessengerDeps } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { requireSession } from "../session";

const RECENT = 20;
/** How long leaving waits for lines still being handed to the relay. */
const QUIT_FLUSH_MS = 10_000;
/**
 * How often a long conversation re-reads the user's own account on chain (one cheap read): a reset started
 * with a stolen password can only be cancelled while its delay runs, so an open talk must not hide it.
 */
const OWN_ACCOUNT_CHECK_MS = 120_000;

/** Errors no reconnect can cure: the conversation ends with them. */
const FATAL_CODES = new Set(["SESSION_EXPIRED", "UNAUTHORIZED", "CERTIFICATE_CHANGED", "USAGE", "NOT_LOGGED_IN"]);

const sleep = (ms: number, abort: Promise<void>) => Promise.race([new Promise<void>((resolve) => setTimeout(resolve, ms).unref()), abort]);

/**
 * chat talk USER: a live conversation. Recent history first; then each line typed is sent, and USER's
 * messages appear as they arrive (messages from others stay in the mailbox for chat inbox).
 * A relay restart or network drop does not end it: it reconnects with capped backoff, and lines typed
 * meanwhile wait in the outbox and are sent in order once connected. Each sent line shows its state as it
 * changes: sending, stored on the relay, delivered (USER's device acknowledged it).
 * With a terminal, readline keeps the typed line intact around incoming lines; without one (scripts,
 * tests) lines are read from standard input. /quit, Ctrl-D or Ctrl-C leaves.
 */
export async function talk(ctx: MessengerDeps & ConnectionDeps & OwnAccountDeps & Pick<Context, "lines" | "options">, rawPeer: string): Promise<void> {
  const peer = parseUsername(rawPeer);
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  const me = session.username;
  await checkOwnAccount(ctx, me);
  const messenger = new Messenger(ctx, session);
  await messenger.book.current(peer); // check (and announce) the peer's key before anything else
  for (const entry of ctx.history.read(me, peer).slice(-RECENT)) {
    const sender = entry.direction === "in" ? peer : me;
    ctx.out.data({ type: "history", id: entry.id, from: sender, body: entry.body, timestamp: entry.timestamp }, formatMessage({ sender, body: entry.body, timestamp: entry.timestamp }));
  }

  let conn = await RelayConnection.open(ctx, session);
  const tty = Boolean(process.stdin.isTTY) && !ctx.options.passwordStdin;
  const prompt = `${me}> `;
  const rl = tty ? readline.createInterface({ input: process.stdin, output: process.stderr, prompt }) : undefined;
  const show = (object: Record<string, unknown>, text: string) => {
    if (rl) {
      readline.clearLine(process.stderr, 0);
      readline.cursorTo(process.stderr, 0);
    }
    ctx.out.data(object, text);
    rl?.prompt(true);
  };
  const note = (text: string) => {
    if (rl) {
      readline.clearLine(process.stderr, 0);
      readline.cursorTo(process.stderr, 0);
    }
    ctx.out.info(text);
    rl?.prompt(true);
  };

  // Delivery state of each line sent in this conversation, shown as it moves forward only.
  const states = new Map<string, { state: DeliveryState; to: string; body: string }>();
  const advance = (id: string, state: DeliveryState) => {
    const known = states.get(id);
    if (!known || !advances(known.state, state)) return;
    known.state = state;
    const text =
      state === "stored"
        ? `  ✓ stored on the relay for ${inertLine(known.to)}: "${snippet(known.body)}"`
        : `  ✓✓ delivered to ${inertLine(known.to)}'s device: "${snippet(known.body)}"`;
    show({ type: "status", id, to: known.to, status: state }, text);
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

  // One sender at a time: the outbox goes out in order, and no entry is sent twice at once.
  let pumping: Promise<void> | undefined;
  let pumpAgain = false;
  const pump = (): Promise<void> => {
    if (pumping) {
      pumpAgain = true;
      return pumping;
    }
    pumping = (async () => {
      do {
        pumpAgain = false;
        const current = conn;
        if (!current.isOpen || ctx.outbox.list(me).length === 0) break;
        for (const result of await messenger.flushOutbox(current)) {
          if (!states.has(result.entry.id)) states.set(result.entry.id, { state: "sending", to: result.entry.to, body: result.entry.body });
          if (result.status) advance(result.entry.id, result.status === "delivered" ? "delivered" : "stored");
          else if (result.error && !current.isOpen) break; // the connection dropped: the reconnect sends it
          else if (result.error) note(`not sent to ${inertLine(result.entry.to)}: ${result.error.code}: ${result.error.message}`);
        }
      } while (pumpAgain);
    })().finally(() => (pumping = undefined));
    return pumping;
  };

  const listen = (c: RelayConnection) => {
    c.onFrame((frame: ServerFrame) => {
      if (frame.type === "message" && frame.from === peer) {
        receiving = receiving
          .then(async () => {
            const inner = await messenger.receive(c, frame);
            if (inner) show({ type: "message", id: inner.id, from: inner.sender, body: inner.body, timestamp: inner.timestamp }, formatMessage(inner));
          })
          .catch((error) => note(`could not read a message: ${describeError(error).message}`));
      } else if (frame.type === "receipt" && states.get(frame.id)?.to === frame.to) {
        advance(frame.id, "delivered");
      } else if (frame.type === "presence" && frame.user === peer && !presenceShown) {
        presenceShown = true;
        note(frame.online ? `${peer} is online.` : `${peer} is not connected to this relay now: your messages wait for ${peer} on the relay.`);
      }
    });
  };

  /** Keeps a connection open until leaving: after a drop, "reconnecting…", retries with capped backoff, then sends the outbox. */
  const stayConnected = async () => {
    for (;;) {
      listen(conn);
      try {
        conn.send({ type: "presence", user: peer });
      } catch {
        /* closed already: handled below */
      }
      void pump();
      const closed = new Promise<ChatError | undefined>((resolve) => conn.onClose((error) => resolve(error)));
      const error = await Promise.race([closed, quitSignal.then(() => undefined)]);
      if (quitting) return;
      if (error && FATAL_CODES.has(error.code)) {
        fatal = error;
        quit();
        return;
      }
      note("connection to the relay lost; reconnecting…");
      for (let attempt = 0; ; attempt++) {
        await sleep(reconnectDelayMs(attempt), quitSignal);
        if (quitting) return;
        try {
          conn = await RelayConnection.open(ctx, session);
          note("reconnected.");
          recheckOwnAccount();
          break;
        } catch (error) {
          const { code } = describeError(error);
          if (FATAL_CODES.has(code)) {
            fatal = error as ChatError;
            quit();
            return;
          }
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

  ctx.out.info(`Talking with ${peer}. Type a message and press Enter; /quit or Ctrl-D to leave.`);
  // Earlier messages that have not reached the peer: told once, when the conversation opens.
  waitingMessages(ctx, session, [peer]).then(
    (waiting) => waiting.forEach((m) => note(describeWaiting(m))),
    () => undefined,
  );
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
        const entry = await messenger.prepare(peer, line);
        states.set(entry.id, { state: "sending", to: peer, body: line });
        show(
          { type: "sent", id: entry.id, to: peer, status: "sending" },
          formatMessage({ sender: me, body: line, timestamp: entry.timestamp }, conn.isOpen ? "sending…" : "waiting for the relay…"),
        );
        // Awaited so that lines from a script go out in order before the next is read; a dropped
        // connection ends the wait at once and leaves the line in the outbox.
        await pump();
      } catch (error) {
        const { code, message } = describeError(error);
        note(`not sent: ${code}: ${message}`);
      }
    }
    // Leaving: give lines still on their way a moment to be accepted.
    if (conn.isOpen) await Promise.race([pump(), new Promise((resolve) => setTimeout(resolve, QUIT_FLUSH_MS).unref())]);
    await receiving;
  } finally {
    clearInterval(ownAccountTimer);
    quitting = true;
    quit();
    rl?.close();
    await connection;
    await conn.close();
  }
  const left = ctx.outbox.list(me).length;
  if (left > 0) ctx.out.info(`${left} message${left === 1 ? "" : "s"} wait in the outbox; they are sent the next time you run talk, send or inbox.`);
  if (fatal) throw fatal;
}
