import type { ServerFrame } from "../../protocol/wire";
import { RelayConnection, type ConnectionDeps } from "../connection";
import { Messenger, describeWaiting, formatMessage, waitingMessages, type MessengerDeps } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import type { Session } from "../session";
import { requireSession } from "../session";

/**
 * chat inbox: connect, take the mailbox backlog until the relay says "ready", open and check each
 * message, save it, acknowledge it, print it; then re-send any unaccepted outbox entries.
 */
export async function inbox(ctx: MessengerDeps & ConnectionDeps & OwnAccountDeps): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  await checkOwnAccount(ctx, session.username);
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
    if (printed === 0) ctx.out.info("No new messages.");
    await showWaiting(ctx, session);
  } finally {
    await conn.close();
  }
}

/** Messages you sent that the relay holds but the recipient has not received, or that the relay lost. */
async function showWaiting(ctx: MessengerDeps & ConnectionDeps, session: Session): Promise<void> {
  let waiting;
  try {
    waiting = await waitingMessages(ctx, session);
  } catch {
    return; // an older relay without the status query: nothing to tell
  }
  for (const m of waiting) {
    if (m.state === "unknown") ctx.out.warn({ code: "MESSAGE_LOST", id: m.id, to: m.to, message: describeWaiting(m) });
    else ctx.out.info(describeWaiting(m));
  }
}
