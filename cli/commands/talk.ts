import readline from "node:readline";
import { assertUsername } from "../../protocol/username";
import type { ServerFrame } from "../../protocol/wire";
import { RelayConnection, type ConnectionDeps } from "../connection";
import type { Context } from "../context";
import { Messenger, formatMessage, type MessengerDeps } from "../messaging";
import { requireSession } from "../session";

const RECENT = 20;

/**
 * chat talk USER: a live conversation. Recent history first; then each line typed is sent, and
 * USER's messages appear as they arrive (messages from others stay in the mailbox for chat inbox).
 * With a terminal, readline keeps the typed line intact around incoming lines; without one (scripts,
 * tests) lines are read from standard input. /quit or end of input leaves.
 */
export async function talk(ctx: MessengerDeps & ConnectionDeps & Pick<Context, "lines" | "options">, rawPeer: string): Promise<void> {
  const peer = assertUsername(rawPeer);
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  const messenger = new Messenger(ctx, session);
  await messenger.book.current(peer); // check (and announce) the peer's key before anything else
  for (const entry of ctx.history.read(session.username, peer).slice(-RECENT)) {
    const sender = entry.direction === "in" ? peer : session.username;
    ctx.out.data({ type: "history", id: entry.id, from: sender, body: entry.body, timestamp: entry.timestamp }, formatMessage({ sender, body: entry.body, timestamp: entry.timestamp }));
  }
  const conn = await RelayConnection.open(ctx, session);
  const tty = Boolean(process.stdin.isTTY) && !ctx.options.passwordStdin;
  const rl = tty ? readline.createInterface({ input: process.stdin, output: process.stderr, prompt: `${session.username}> ` }) : undefined;
  const show = (object: Record<string, unknown>, text: string) => {
    if (rl) {
      readline.clearLine(process.stderr, 0);
      readline.cursorTo(process.stderr, 0);
    }
    ctx.out.data(object, text);
    rl?.prompt(true);
  };
  let queue = Promise.resolve();
  conn.onFrame((frame: ServerFrame) => {
    if (frame.type !== "message" || frame.from !== peer) return;
    queue = queue
      .then(async () => {
        const inner = await messenger.receive(conn, frame);
        if (inner) show({ type: "message", id: inner.id, from: inner.sender, body: inner.body, timestamp: inner.timestamp }, formatMessage(inner));
      })
      .catch((error) => ctx.out.info(`could not read a message: ${(error as Error).message}`));
  });
  const closed = new Promise<void>((resolve) => conn.onClose(() => resolve()));
  ctx.out.info(`Talking with ${peer}. Type a message and press Enter; /quit to leave.`);
  rl?.prompt();
  const nextLine = rl
    ? (() => {
        const pending: string[] = [];
        const waiters: ((line: string | undefined) => void)[] = [];
        rl.on("line", (line) => (waiters.length ? waiters.shift()!(line) : pending.push(line)));
        rl.on("close", () => waiters.splice(0).forEach((w) => w(undefined)));
        return () => (pending.length ? Promise.resolve(pending.shift()) : new Promise<string | undefined>((r) => waiters.push(r)));
      })()
    : () => ctx.lines.next();
  try {
    for (;;) {
      const line = await Promise.race([nextLine(), closed.then(() => undefined)]);
      if (line === undefined || line.trim() === "/quit") break;
      if (line.trim() === "") {
        rl?.prompt();
        continue;
      }
      try {
        const entry = await messenger.prepare(peer, line);
        const [result] = await messenger.flushOutbox(conn, new Set([entry.id]));
        if (result?.error) ctx.out.info(`not sent yet (kept in the outbox): ${result.error.message}`);
        else show({ type: "sent", id: entry.id, to: peer, status: result?.status }, formatMessage({ sender: session.username, body: line, timestamp: entry.timestamp }));
      } catch (error) {
        ctx.out.info(`not sent: ${(error as Error).message}`);
        rl?.prompt();
      }
    }
    await queue;
    if (conn.closeError) throw conn.closeError;
  } finally {
    rl?.close();
    await conn.close();
  }
}
