import { ChatError } from "../../protocol/errors";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import type { MessengerDeps } from "../messaging";
import { openChatCommand, type MlsChatDeps } from "../mls/chat";
import { inertLine } from "../output";
import { printGroupEvent, printMlsMessage } from "../mls/print";
import type { OwnAccountDeps } from "../own-account";
import { groupConversation } from "../stores";

export type SendDeps = MlsChatDeps & MessengerDeps & OwnAccountDeps & Pick<Context, "options" | "sessions">;

/**
 * chat send USER TEXT, or chat send --group NAME TEXT: on MLS (a one-to-one chat is a two-member group,
 * started here with USER's key packages when there is none, even while USER is offline). The message waits
 * in the outbox until the relay accepts it; earlier messages still there go first, under their first ids.
 */
export async function send(ctx: SendDeps, first: string, second?: string): Promise<void> {
  const { messenger, chat } = await openChatCommand(ctx);
  let to: string;
  let text: string;
  if (ctx.options.group !== undefined) {
    if (second !== undefined) throw new ChatError("USAGE", "with --group, give only the text: chat send --group NAME TEXT");
    to = groupConversation(chat.resolveGroup(ctx.options.group));
    text = first;
  } else {
    if (second === undefined) throw new ChatError("USAGE", "usage: chat send USER TEXT (or chat send --group NAME TEXT)");
    to = parseUsername(first);
    text = second;
    // The peer's key history, read from the chain and compared with the pins: a rotation is told, a reset loudly.
    await messenger.recheckPeerKey(to);
    await messenger.book.current(to);
  }
  // Caught up first: a welcome from the peer joins their chat instead of starting a second one, and devices
  // whose key was replaced on chain are swapped for the current ones before anything is sealed for them.
  const events = await ctx.out.progress("catching up", chat.sync());
  const entry = chat.queue(to, text);
  const results = await ctx.out.progress("sending", chat.flushOutbox());
  let failure: ChatError | undefined;
  for (const result of results) {
    const mine = result.entry.id === entry.id;
    const where = result.groupId ? chat.label(result.groupId) : inertLine(result.entry.to);
    if (result.status) {
      ctx.out.data(
        { type: "sent", id: result.entry.id, to: result.entry.to, status: result.status, resent: !mine, v: 2, ...(result.groupId ? { groupId: result.groupId } : {}) },
        `${mine ? "Sent" : "Re-sent"} to ${where} (${result.status === "delivered" ? "delivered" : "stored for delivery"}) [${result.entry.id}]`,
      );
    } else if (mine) failure = result.error;
    else ctx.out.info(`an earlier message to ${where} is still waiting: ${result.error?.message}`);
  }
  // What arrived while catching up is saved in the history, and shown here, since inbox will not show it again.
  for (const message of chat.take()) printMlsMessage(ctx.out, chat, message);
  for (const event of events) printGroupEvent(ctx.out, chat, event);
  if (failure) throw failure;
}
