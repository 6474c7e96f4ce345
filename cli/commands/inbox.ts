import type { ServerFrame } from "../../protocol/wire";
import { RelayConnection, type ConnectionDeps } from "../connection";
import { describeError } from "../errors";
import { Messenger, describeWaiting, formatMessage, waitingMessages, type MessengerDeps, type WaitingMessage } from "../messaging";
import { inertLine } from "../output";
import { MlsChat, type MlsChatDeps } from "../mls/chat";
import { printGroupEvent, printMlsMessage } from "../mls/print";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import type { Session } from "../session";
import { requireSession } from "../session";

/**
 * chat inbox: first what still waits in envelope v1 (connect, take the mailbox backlog until the relay says
 * "ready", open and check each message, save it, acknowledge it, print it); then messages on MLS: re-send
 * the outbox, join the chats and groups whose welcomes wait, catch up every group with news and print its
 * new messages and membership changes.
 */
export async function inbox(ctx: MessengerDeps & ConnectionDeps & OwnAccountDeps & MlsChatDeps): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  await checkOwnAccount(ctx, session.username);
  let printed = 0;
  // Envelope v1 is sealed to the identity key, which a linked device never holds: it reads MLS only.
  if (!session.linked) printed += await inboxV1(ctx, session);
  const chat = await MlsChat.open(ctx, session);
  printed += await inboxMls(ctx, chat);
  if (printed === 0) ctx.out.info("No new messages.");
  await showWaiting(ctx, session, chat);
}

/** The envelope v1 part of the inbox; returns how many messages it printed. */
async function inboxV1(ctx: MessengerDeps & ConnectionDeps, session: Session): Promise<number> {
  const messenger = new Messenger(ctx, session);
  const conn = await RelayConnection.open(ctx, session);
  let printed = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      let queue = Promise.resolve();
      let ready = false;
      const onFrame = (frame: ServerFrame) => {
        if (frame.type === "message") {
          queue = queue.then(async () => {
            const inner = await messenger.receive(conn, frame);
            if (!inner) return;
            printed++;
            ctx.out.data(
              { type: "message", id: inner.id, from: inner.sender, body: inner.body, timestamp: inner.timestamp, receivedAt: frame.receivedAt, keyIndex: inner.recipientKeyIndex },
              formatMessage(inner),
            );
          });
          queue.catch(reject);
        } else if (frame.type === "ready" && !ready) {
          ready = true;
          queue.then(() => resolve(), reject);
        } else if (frame.type === "error" && frame.id === undefined) {
          ctx.out.info(`relay: ${frame.code}: ${frame.message}`);
        }
      };
      conn.onFrame(onFrame);
      conn.onClose((error) => reject(error ?? new Error("the relay closed the connection")));
    });
    const resent = await messenger.flushOutbox(conn);
    for (const result of resent.filter((r) => r.status)) {
      ctx.out.info(`re-sent an earlier message to ${result.entry.to} (${result.status})`);
    }
  } finally {
    await conn.close();
  }
  return printed;
}

/** The MLS part of the inbox; returns how many messages it printed. */
async function inboxMls(ctx: MlsChatDeps, chat: MlsChat): Promise<number> {
  await chat.publishKeyPackages().catch((error) => ctx.out.info(`could not refresh this device's key packages: ${describeError(error).message}`));
  for (const result of await chat.flushOutbox()) {
    const where = result.groupId ? chat.label(result.groupId) : inertLine(result.entry.to);
    if (result.status) ctx.out.info(`re-sent an earlier message to ${where} (${result.status})`);
    else ctx.out.info(`an earlier message to ${where} is still waiting: ${result.error?.message}`);
  }
  const events = await chat.sync();
  const messages = chat.take();
  for (const m of messages) printMlsMessage(ctx.out, chat, m);
  for (const event of events) printGroupEvent(ctx.out, chat, event);
  return messages.length;
}

/** Messages you sent that the relay holds but the recipient has not received, or that the relay lost. */
async function showWaiting(ctx: MessengerDeps & ConnectionDeps, session: Session, chat: MlsChat): Promise<void> {
  let waiting: WaitingMessage[];
  try {
    waiting = session.linked ? [] : await waitingMessages(ctx, session);
  } catch {
    waiting = []; // an older relay without the status query: nothing to tell
  }
  waiting.push(...(await chat.waiting().catch(() => [])));
  for (const m of waiting) {
    if (m.state === "unknown") ctx.out.warn({ code: "MESSAGE_LOST", id: m.id, to: m.to, message: describeWaiting(m) });
    else ctx.out.info(describeWaiting(m));
  }
}
