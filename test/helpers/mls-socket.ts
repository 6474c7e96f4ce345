/**
 * A device's WebSocket to the relay, held as `chat talk` holds it: a SocketAppends wired to it (incoming
 * frames handed to it, the socket's end told to it), so a DsClient given it sends small application
 * messages as append frames. Counts what went over the socket and what the socket gave up to HTTP, so a
 * test can tell which path carried a device's messages. Opened with `early`, it asks for early frames and
 * keeps them, and hands each to `onEarly` as it comes. No tests here.
 */
import WebSocket from "ws";
import type { DsAppendResult } from "../../client-core/ds-client";
import { SocketAppends, SocketAppendUnavailable } from "../../client-core/socket-appends";
import { WS_EARLY_PARAM, WS_PATH, type EarlyFrame } from "../../protocol/wire";

export interface SocketAppendCounts {
  /** append frames that went out on the socket */
  frames: number;
  /** cursor frames that went out (the relay answers none) */
  cursorFrames: number;
  /** appends the relay answered over the socket, by answer */
  stored: number;
  /** a re-sent id the relay held already */
  duplicates: number;
  epochConflicts: number;
  /** appends the socket could not settle, by reason: each then went over HTTP with the same id */
  unavailable: Partial<Record<SocketAppendUnavailable["reason"], number>>;
}

/** SocketAppends that counts each append's outcome on the socket. */
class CountingSocketAppends extends SocketAppends {
  readonly counts: SocketAppendCounts = { frames: 0, cursorFrames: 0, stored: 0, duplicates: 0, epochConflicts: 0, unavailable: {} };

  override async append(...args: Parameters<SocketAppends["append"]>): Promise<DsAppendResult> {
    try {
      const result = await super.append(...args);
      if (!result.accepted) this.counts.epochConflicts++;
      else if (result.duplicate) this.counts.duplicates++;
      else this.counts.stored++;
      return result;
    } catch (error) {
      if (error instanceof SocketAppendUnavailable) this.counts.unavailable[error.reason] = (this.counts.unavailable[error.reason] ?? 0) + 1;
      throw error;
    }
  }
}

export interface RelaySocket {
  appends: SocketAppends;
  counts: SocketAppendCounts;
  readonly open: boolean;
  /** the early frames this socket received, as the relay sent them, in arrival order */
  readonly earlyFrames: EarlyFrame[];
  /** called with each early frame as it arrives (set it before the frames that matter are sent) */
  onEarly?: (frame: EarlyFrame) => void;
  close(): void;
}

/**
 * Opens an authenticated WebSocket to the relay at `relayUrl` (http: or https: origin) with `token`'s
 * session, and resolves once the relay has said "ready" (the socket then carries appends). `early`: with
 * `?early=1`, as `chat talk` opens it.
 */
export function openRelaySocket(relayUrl: string, token: string, options: { early?: boolean; timeoutMs?: number } = {}): Promise<RelaySocket> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    const query = options.early ? `?${WS_EARLY_PARAM}=1` : "";
    const ws = new WebSocket(relayUrl.replace(/^http/, "ws") + WS_PATH + query, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
    const appends = new CountingSocketAppends({
      send: (text) => {
        if (ws.readyState !== WebSocket.OPEN) return false;
        ws.send(text);
        const type = (JSON.parse(text) as { type?: unknown }).type;
        if (type === "append") appends.counts.frames++;
        else if (type === "cursor") appends.counts.cursorFrames++;
        return true;
      },
    });
    const socket: RelaySocket = {
      appends,
      counts: appends.counts,
      earlyFrames: [],
      get open() {
        return ws.readyState === WebSocket.OPEN;
      },
      close: () => ws.terminate(),
    };
    let ready = false;
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`the relay's socket at ${relayUrl} was not ready within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.on("message", (data) => {
      let frame: unknown;
      try {
        frame = JSON.parse(data.toString());
      } catch {
        return;
      }
      if (appends.handle(frame)) return;
      if ((frame as { type?: unknown }).type === "early") {
        socket.earlyFrames.push(frame as EarlyFrame);
        socket.onEarly?.(frame as EarlyFrame);
        return;
      }
      // Group notices and the rest are not needed: the devices read their groups by sync.
      if (!ready && (frame as { type?: unknown }).type === "ready") {
        ready = true;
        clearTimeout(timer);
        resolve(socket);
      }
    });
    // Appends unanswered when the socket goes are sent again over HTTP with the same id.
    ws.on("close", () => {
      appends.closed();
      if (!ready) {
        clearTimeout(timer);
        reject(new Error(`the relay's socket at ${relayUrl} closed before it was ready`));
      }
    });
    // A failed socket also closes (handled above); the error alone must not throw.
    ws.on("error", () => undefined);
  });
}
