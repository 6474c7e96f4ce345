/**
 * POST /v1/messages/status: a sender asks where the messages it sent stand (pending for the recipient,
 * delivered, or unknown: never stored, expired or lost, to be sent again). Authenticated with the same
 * session token as the WebSocket; the sender is always the token's user, never client input.
 */
import { Router, type Request } from "express";
import { MessageStatusRequest, type MessageStatusResponse } from "../../protocol/wire";
import { verifySessionToken, type SessionClaims } from "../sessions";
import type { Mailbox } from "../storage/mailbox";
import { fromStorage, type HttpContext } from "./context";
import { parseWith } from "./errors";

/** The claims of the request's `Authorization: Bearer <token>`; UNAUTHORIZED or SESSION_EXPIRED otherwise. */
function bearerClaims(ctx: HttpContext, req: Request): SessionClaims {
  const match = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(req.headers.authorization ?? "");
  return verifySessionToken({ secret: ctx.settings.sessionSecret, token: match?.[1], now: ctx.clock() });
}

export function messageRoutes(ctx: HttpContext & { mailbox: Mailbox }): Router {
  const router = Router();
  router.post("/v1/messages/status", async (req, res) => {
    const claims = bearerClaims(ctx, req);
    const body = parseWith(MessageStatusRequest, req.body);
    const answer: MessageStatusResponse = await fromStorage(
      ctx.mailbox.pendingIds({ recipient: body.to, sender: claims.sub, ids: body.ids, now: ctx.clock() }),
    );
    res.json({ pending: answer.pending, delivered: answer.delivered, unknown: answer.unknown });
  });
  return router;
}
