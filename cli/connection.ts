/**
 * The WebSocket connection to the relay (GET WS_PATH, `Authorization: Bearer <token>`), over the same
 * pinned TLS as the HTTP calls. Frames are validated with protocol/wire.ts.
 */
import WebSocket from "ws";
import { ChatError, type ErrorCode } from "../protocol/errors";
import { ServerFrame, CLOSE_CODES, ErrorBody, MAX_STATUS_IDS, MessageStatusResponse, WS_EARLY_PARAM, type ClientFrame } from "../protocol/wire";
import type { Context } from "./context";
import { exchangeText } from "./mls/ds-client";
import type { Output } from "./output";
import type { Session } from "./session";

/** What opening a connection needs: the relay (URL, pinned TLS), output for warnings, and the session store to end an expired session. */
export type ConnectionDeps = Pick<Context, "relay" | "out" | "sessions">;

export type FrameHandler = (frame: ServerFrame) => void;

export class RelayConnection {
  private handlers = new Set<FrameHandler>();
  /**
   * Frames that arrived while no handler listened. ws emits the frames that came in the same packet as the
   * upgrade's answer right after "open", before the code awaiting the connection has run: keep them for
   * the first handler instead of losing them (a lost "ready" would leave `chat inbox` waiting forever).
   */
  private unhandled: ServerFrame[] = [];
  private closedWith?: ChatError;
  private closeHandlers = new Set<(error?: ChatError) => void>();

  private constructor(
    private readonly ws: WebSocket,
    private readonly out?: Output,
  ) {
    ws.on("message", (data, isBinary) => {
      if (isBinary) return;
      let frame: ServerFrame;
      try {
        const json = JSON.parse(data.toString());
        const parsed = ServerFrame.safeParse(json);
        if (!parsed.success) {
          // A message without a valid sender, id or envelope is the relay's doing (stripped or altered): say
          // so; other unknown frames may come from a newer relay and are ignored.
          if (json?.type === "message") {
            const issue = parsed.error.issues[0];
            const field = issue.path.join(".") || "frame";
            this.out?.warn({
              code: "MESSAGE_REJECTED",
              reason: `${field}: ${issue.message}`,
              message: `rejected a message frame from the relay: ${field}: ${issue.message} (a relay that strips or alters the sender?)`,
            });
          }
          return;
        }
        frame = parsed.data;
      } catch {
        return;
      }
      if (this.handlers.size === 0) this.unhandled.push(frame);
      for (const handler of this.handlers) handler(frame);
    });
    ws.on("close", (code, reason) => {
      if (code === CLOSE_CODES.sessionExpired) this.closedWith = new ChatError("SESSION_EXPIRED", "session expired: log in again");
      else if (code !== CLOSE_CODES.normal) {
        this.closedWith = new ChatError("RELAY_UNREACHABLE", `the relay closed the connection (${code}${reason.length ? `: ${reason.toString().slice(0, 100)}` : ""})`);
      }
      for (const handler of this.closeHandlers) handler(this.closedWith);
    });
    ws.on("error", () => undefined); // reported through close
  }

  /**
   * The relay's transport was checked when the context built it (Context.relay). `early`: ask for early
   * frames (the group's messages before they are stored), for a client that shows them as they come.
   */
  static async open(ctx: ConnectionDeps, session: Session, options: { early?: boolean } = {}): Promise<RelayConnection> {
    const tlsOptions = await ctx.relay.tls();
    const url = new URL(ctx.relay.wsUrl());
    if (options.early) url.searchParams.set(WS_EARLY_PARAM, "1");
    const ws = new WebSocket(url, {
      headers: { authorization: `Bearer ${session.token}` },
      perMessageDeflate: false,
      handshakeTimeout: 15_000,
      ...tlsOptions,
    });
    // Listen from the start, so that no frame or close is missed between "open" and the caller's handlers.
    const connection = new RelayConnection(ws, ctx.out);
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error) => {
        cleanup();
        reject(ctx.relay.connectionError(error));
      };
      const onOpen = () => {
        cleanup();
        resolve();
      };
      const onUnexpected = (_req: unknown, response: import("node:http").IncomingMessage) => {
        cleanup();
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("end", () => {
          ws.terminate();
          let code: ErrorCode = response.statusCode === 401 ? "UNAUTHORIZED" : "RELAY_UNREACHABLE";
          let message = `the relay at ${ctx.relay.origin} refused the connection (${response.statusCode})`;
          try {
            const body = ErrorBody.safeParse(JSON.parse(Buffer.concat(chunks).toString("utf8")));
            if (body.success) ({ code, message } = body.data.error);
          } catch {}
          if (code === "SESSION_EXPIRED" || code === "UNAUTHORIZED") {
            ctx.sessions.delete();
            reject(new ChatError("SESSION_EXPIRED", "session expired: log in again"));
          } else reject(new ChatError(code, message));
        });
      };
      const cleanup = () => {
        ws.off("error", onError);
        ws.off("open", onOpen);
        ws.off("unexpected-response", onUnexpected);
      };
      ws.on("error", onError);
      ws.on("open", onOpen);
      ws.on("unexpected-response", onUnexpected);
    });
    return connection;
  }

  onFrame(handler: FrameHandler): () => void {
    this.handlers.add(handler);
    const early = this.unhandled.splice(0);
    for (const frame of early) handler(frame);
    return () => this.handlers.delete(handler);
  }

  onClose(handler: (error?: ChatError) => void): () => void {
    this.closeHandlers.add(handler);
    // Closed before anyone listened: tell this handler too.
    if (this.ws.readyState === WebSocket.CLOSED) queueMicrotask(() => handler(this.closedWith));
    return () => this.closeHandlers.delete(handler);
  }

  get isOpen(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  get closeError(): ChatError | undefined {
    return this.closedWith;
  }

  /** Sends one frame's text if the socket is open; false (nothing sent) otherwise. */
  sendText(text: string): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(text);
    return true;
  }

  send(frame: ClientFrame): void {
    if (this.ws.readyState !== WebSocket.OPEN) throw this.closedWith ?? new ChatError("RELAY_UNREACHABLE", "the connection to the relay is closed");
    this.ws.send(JSON.stringify(frame));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      const timer = setTimeout(() => {
        this.ws.terminate();
        resolve();
      }, 2_000);
      this.ws.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(CLOSE_CODES.normal);
    });
  }
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "[::1]", "localhost"]);
const isLoopback = (url: URL) => LOOPBACK.has(url.hostname) || /^127\./.test(url.hostname);
const warned = new Set<string>();

/**
 * Plain http:// to a relay sends the password-derived credential and the session token in the clear:
 * refused unless CHAT_INSECURE_RELAY=1 (or --insecure-relay) asks for it (warned about then), and warned about on loopback,
 * where only this machine can listen.
 */
export function checkRelayTransport(relayUrl: URL, out: Output, env: NodeJS.ProcessEnv = process.env): void {
  if (relayUrl.protocol === "https:") return;
  if (!isLoopback(relayUrl) && env.CHAT_INSECURE_RELAY !== "1") {
    throw new ChatError("USAGE", `refusing the unencrypted relay ${relayUrl.origin}: use https://, or pass --insecure-relay (CHAT_INSECURE_RELAY=1) if you accept that anyone on the network can read and change the traffic`);
  }
  warnOnce(out, relayUrl.origin, { code: "INSECURE_RELAY", message: `the relay ${relayUrl.origin} is plain http: the session token travels unencrypted` });
}

/** A chain RPC over plain http that is not on loopback can lie about keys undetected by TLS: warned about. */
export function checkRpcTransport(rpcUrl: string, out: Output): void {
  let url: URL;
  try {
    url = new URL(rpcUrl);
  } catch {
    return; // the chain connection reports a malformed URL itself
  }
  if (url.protocol !== "http:" && url.protocol !== "ws:") return;
  if (isLoopback(url)) return;
  warnOnce(out, url.origin, { code: "INSECURE_RPC", message: `the chain RPC ${url.origin} is plain ${url.protocol.slice(0, -1)} off this machine: anyone on the path can forge the keys it returns; use https or a local node` });
}

function warnOnce(out: Output, origin: string, warning: { code: string; message: string }): void {
  if (warned.has(`${warning.code} ${origin}`)) return;
  warned.add(`${warning.code} ${origin}`);
  out.warn(warning);
}

/**
 * POST /v1/messages/status: where the messages `session`'s user sent to `to` under `ids` stand (pending,
 * delivered, unknown). Asked in pages of at most MAX_STATUS_IDS ids.
 */
export async function fetchMessageStatus(ctx: ConnectionDeps, session: Session, to: string, ids: readonly string[]): Promise<MessageStatusResponse> {
  const answer: MessageStatusResponse = { pending: [], delivered: [], unknown: [] };
  for (let start = 0; start < ids.length; start += MAX_STATUS_IDS) {
    const page = await postStatus(ctx, session, to, ids.slice(start, start + MAX_STATUS_IDS));
    answer.pending.push(...page.pending);
    answer.delivered.push(...page.delivered);
    answer.unknown.push(...page.unknown);
  }
  return answer;
}

async function postStatus(ctx: ConnectionDeps, session: Session, to: string, ids: string[]): Promise<MessageStatusResponse> {
  const tlsOptions = await ctx.relay.tls();
  const payload = Buffer.from(JSON.stringify({ to, ids }));
  const { status, text } = await exchangeText({
    secure: ctx.relay.secure,
    target: new URL("/v1/messages/status", ctx.relay.url),
    method: "POST",
    headers: { authorization: `Bearer ${session.token}` },
    payload,
    timeoutMs: 15_000,
    tls: tlsOptions,
  }).catch((error) => {
    throw ctx.relay.connectionError(error);
  });
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ChatError("RELAY_UNREACHABLE", `the relay at ${ctx.relay.origin} answered the status query with ${status} and no JSON`);
  }
  if (status >= 400) {
    const body = ErrorBody.safeParse(json);
    if (body.success && (body.data.error.code === "SESSION_EXPIRED" || body.data.error.code === "UNAUTHORIZED")) {
      throw new ChatError("SESSION_EXPIRED", "session expired: log in again");
    }
    throw body.success ? new ChatError(body.data.error.code, body.data.error.message) : new ChatError("RELAY_UNREACHABLE", `the relay at ${ctx.relay.origin} answered the status query with ${status}`);
  }
  const parsed = MessageStatusResponse.safeParse(json);
  if (!parsed.success) throw new ChatError("RELAY_UNREACHABLE", `the relay at ${ctx.relay.origin} sent a malformed status answer`);
  return parsed.data;
}

/** Waits before reconnect attempt `attempt` (0-based): 0.5 s doubling up to 10 s, with jitter so clients do not reconnect in step. */
export function reconnectDelayMs(attempt: number): number {
  const base = Math.min(10_000, 500 * 2 ** Math.min(attempt, 10));
  return Math.round(base * (0.75 + Math.random() * 0.5));
}
