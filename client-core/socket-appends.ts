/**
 * Small MLS application messages and cursor moves over the relay's authenticated WebSocket, for a client
 * that holds that socket anyway: a frame each way costs the relay far less than an HTTPS request (no
 * session lookup, routing or response per message). An append goes out as an AppendFrame and is answered
 * by an AppendedFrame or an ErrorFrame carrying its id; the socket's owner hands every incoming frame to
 * `handle` and calls `closed` when the socket goes. An append the socket cannot settle (not open, lost
 * mid-way, no answer in time, too many waiting, the relay's storage busy) rejects with
 * SocketAppendUnavailable: the caller then sends the same id over HTTP, which the relay answers as a
 * duplicate with the first seq if the first copy was stored, so nothing is stored or shown twice.
 * Browser-safe: no Node imports.
 */
import { ChatError, type ErrorCode } from "../protocol/errors";
import { AppendedFrame, ErrorFrame, MAX_APPENDS_WAITING, type AppendFrame, type CursorFrame } from "../protocol/wire";
import type { DsAppendResult } from "./ds-client";

/** How long an append waits for its answer before the caller goes to HTTP (the relay answers once durable). */
export const SOCKET_APPEND_TIMEOUT_MS = 10_000;
/** Appends waiting for an answer at once, the relay's bound; one device sends one at a time, so more means something is stuck. */
export const SOCKET_APPEND_MAX_PENDING = MAX_APPENDS_WAITING;

/** The socket could not settle an append; the same append is safe to send over HTTP. */
export class SocketAppendUnavailable extends Error {
  constructor(
    readonly reason: "closed" | "timeout" | "busy" | "storage" | "unclear",
    message: string,
  ) {
    super(message);
    this.name = "SocketAppendUnavailable";
  }
}

export interface SocketAppendsOptions {
  /** Sends one frame's text on the socket; false when the socket is not open (nothing was sent). */
  send: (text: string) => boolean;
  /**
   * Awaited before each frame goes out, as before each HTTP request: a browser waits until the device's
   * writes (a used message key, a saved cursor) are in IndexedDB, so the relay never gets ahead of them.
   */
  before?: () => Promise<void>;
  timeoutMs?: number;
  maxPending?: number;
}

interface Pending {
  groupId: string;
  resolve: (result: DsAppendResult) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class SocketAppends {
  /** by message id: an error frame names only the id */
  private readonly pending = new Map<string, Pending>();
  private readonly timeoutMs: number;
  private readonly maxPending: number;

  constructor(private readonly options: SocketAppendsOptions) {
    this.timeoutMs = options.timeoutMs ?? SOCKET_APPEND_TIMEOUT_MS;
    this.maxPending = options.maxPending ?? SOCKET_APPEND_MAX_PENDING;
  }

  /** Appends waiting for their answer. */
  get waiting(): number {
    return this.pending.size;
  }

  /**
   * Appends one application message (`bytes` in standard base64, at most NOTICE_ENTRY_MAX_BYTES before
   * encoding) as device `deviceId`. Resolves with the relay's answer (an epoch conflict included); rejects
   * with the relay's refusal as a ChatError, or with SocketAppendUnavailable when HTTP should be tried.
   */
  async append(groupIdHex: string, body: { deviceId: string; epoch: number; id: string; bytes: string }): Promise<DsAppendResult> {
    await this.options.before?.();
    if (this.pending.has(body.id)) throw new SocketAppendUnavailable("busy", `an append with id ${body.id} already waits on the socket`);
    if (this.pending.size >= this.maxPending) throw new SocketAppendUnavailable("busy", `${this.pending.size} appends already wait on the socket`);
    const frame: AppendFrame = { type: "append", groupId: groupIdHex, deviceId: body.deviceId, epoch: body.epoch, id: body.id, bytes: body.bytes };
    return new Promise<DsAppendResult>((resolve, reject) => {
      const timer = setTimeout(() => this.settle(body.id, (p) => p.reject(new SocketAppendUnavailable("timeout", `no answer to append ${body.id} within ${this.timeoutMs} ms`))), this.timeoutMs);
      // Registered before it is sent: the answer cannot come before the frame has gone.
      this.pending.set(body.id, { groupId: groupIdHex, resolve, reject, timer });
      let sent = false;
      try {
        sent = this.options.send(JSON.stringify(frame));
      } catch {
        sent = false;
      }
      if (!sent) this.settle(body.id, (p) => p.reject(new SocketAppendUnavailable("closed", "the socket to the relay is not open")));
    });
  }

  /**
   * Moves device `deviceId`'s cursor in group `groupIdHex` to `seq` with a CursorFrame. The relay answers
   * nothing when it takes the move, so true means only that the frame went out; false: the socket is not open.
   */
  async moveCursor(groupIdHex: string, deviceId: string, seq: number): Promise<boolean> {
    await this.options.before?.();
    const frame: CursorFrame = { type: "cursor", groupId: groupIdHex, deviceId, seq };
    try {
      return this.options.send(JSON.stringify(frame));
    } catch {
      return false;
    }
  }

  /**
   * Takes an incoming frame (parsed JSON, validated here): true when it answered a waiting append, false
   * for any other frame (the caller handles it as before).
   */
  handle(frame: unknown): boolean {
    if (typeof frame !== "object" || frame === null) return false;
    const type = (frame as { type?: unknown }).type;
    if (type === "appended") {
      const parsed = AppendedFrame.safeParse(frame);
      if (!parsed.success) return false;
      const answer = parsed.data;
      // An answer naming another group is not this append's: it is left to time out and go to HTTP.
      if (this.pending.get(answer.id)?.groupId !== answer.groupId) return false;
      return this.settle(answer.id, (p) => p.resolve({ accepted: true, seq: answer.seq, epoch: answer.epoch, duplicate: answer.duplicate, cursor: answer.cursor }));
    }
    if (type === "error") {
      const parsed = ErrorFrame.safeParse(frame);
      if (!parsed.success || parsed.data.id === undefined || !this.pending.has(parsed.data.id)) return false;
      const error = parsed.data;
      return this.settle(error.id!, (p) => {
        if (error.code === "EPOCH_CONFLICT") {
          if (error.currentEpoch !== undefined) p.resolve({ accepted: false, currentEpoch: error.currentEpoch });
          // Without the epoch the conflict cannot be answered here; HTTP's answer carries it.
          else p.reject(new SocketAppendUnavailable("unclear", "the relay reported an epoch conflict without the group's epoch"));
        } else if (error.code === "STORAGE_UNAVAILABLE") {
          p.reject(new SocketAppendUnavailable("storage", error.message));
        } else {
          p.reject(refusal(error.code, error.message, error.retryAfterMs));
        }
      });
    }
    return false;
  }

  /** The socket closed: every waiting append goes to HTTP (the relay may or may not have stored it). */
  closed(): void {
    for (const id of [...this.pending.keys()]) {
      this.settle(id, (p) => p.reject(new SocketAppendUnavailable("closed", "the socket to the relay closed before the append was answered")));
    }
  }

  private settle(id: string, how: (pending: Pending) => void): boolean {
    const pending = this.pending.get(id);
    if (!pending) return false;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    how(pending);
    return true;
  }
}

/** A refusal as the HTTP path throws it (a rate limit with its wait in seconds, as RelayApi gives it). */
function refusal(code: ErrorCode, message: string, retryAfterMs?: number): ChatError {
  if (code === "RATE_LIMITED" && retryAfterMs !== undefined) return new ChatError(code, message, { retryAfterSeconds: Math.max(1, Math.ceil(retryAfterMs / 1000)) });
  return new ChatError(code, message);
}
