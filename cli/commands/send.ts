import { ChatError } from "../../protocol/errors";
import { RelayConnection, type ConnectionDeps } from "../connection";
import { parseUsername } from "../errors";
import { inertLine } from "../output";
import { Messenger, type MessengerDeps } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { requireSession } from "../session";

/** chat send USER TEXT: encrypt for USER's chain-checked key, send, wait until the relay accepts it. */
export async function send(ctx: MessengerDeps & ConnectionDeps & OwnAccountDeps, to: string, text: string): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  await checkOwnAccount(ctx, session.username);
  const messenger = new Messenger(ctx, session);
  const entry = await messenger.prepare(parseUsername(to), text);
  const conn = await RelayConnection.open(ctx, session);
  try {
    // Left-over messages of earlier runs go first, with their original ids.
    const results = await ctx.out.progress("sending", messenger.flushOutbox(conn));
    let failure: ChatError | undefined;
    for (const result of results) {
      const mine = result.entry.id === entry.id;
      if (result.status) {
        ctx.out.data(
          { type: "sent", id: result.entry.id, to: result.entry.to, status: result.status, resent: !mine, ...(mine ? { keyIndex: entry.recipientKeyIndex } : {}) },
          `${mine ? "Sent" : "Re-sent"} to ${inertLine(result.entry.to)} (${result.status === "delivered" ? "delivered" : "stored for delivery"}) [${result.entry.id}]`,
        );
      } else if (mine) failure = result.error;
      else ctx.out.info(`an earlier message to ${result.entry.to} is still waiting: ${result.error?.message}`);
    }
    if (failure) throw failure;
  } finally {
    await conn.close();
  }
}
