/**
 * The WebSocket connection to the relay (GET WS_PATH, `Authorization: Bearer <token>`), over the same
 * pinned TLS as the HTTP calls. Frames are validated with protocol/wire.ts.
 */
import WebSocket from "ws";
import { ChatError, type ErrorCode } from "../protocol/errors";
import { CLOSE_CODES, ErrorBody, ServerFrame, type ClientFrame } from "../protocol/wire";
import type { Context } from "./context";
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

  static async open(ctx: ConnectionDeps, session: Session): Promise<RelayConnection> {
    const tlsOptions = await ctx.relay.tls();
    const url = ctx.relay.wsUrl();
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
