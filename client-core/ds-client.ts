/**
 * The client side of the relay's MLS Delivery Service (protocol/wire-v2.ts): one device's authenticated
 * HTTP calls. Answers are validated with the wire schemas; refusals keep the relay's stable code. The relay
 * is trusted for ordering and availability only: every MLS byte it hands back is checked by the caller.
 */
import type { z } from "zod";
import { ChatError } from "../protocol/errors";
import { ErrorBody, NOTICE_ENTRY_MAX_BYTES } from "../protocol/wire";
import {
  AppendResponse,
  ClaimKeyPackagesResponse,
  CursorResponse,
  DEVICE_ID_HEADER,
  EpochConflictBody,
  GroupStateResponse,
  KeyPackageCountsResponse,
  LogResponse,
  MembersResponse,
  OkResponse,
  SyncResponse,
  encodeBase64,
  type LogEntryWire,
} from "../protocol/wire-v2";
import { DeviceCredentialResponse, DeviceLinkView, DevicesResponse, DeviceView, RevokeDeviceResponse } from "../protocol/wire-devices";
import { SocketAppendUnavailable, type SocketAppends } from "./socket-appends";

/** `cursor`: for an application message, the sending device's cursor at the relay after the append (absent from older relays). */
export type DsAppendResult = { accepted: true; seq: number; epoch: number; duplicate: boolean; cursor?: number } | { accepted: false; currentEpoch: number };

export interface DsDeviceRef {
  username: string;
  deviceId: string;
}

/** One HTTP request to the relay, as the platform makes it (Node's https with a pinned certificate, or fetch). */
export interface HttpRequest {
  method: "GET" | "POST";
  url: URL;
  /** accept, authorization and device id; content-type with a body */
  headers: Record<string, string>;
  /** JSON text */
  body?: string;
}

/**
 * Sends one request and collects the answer as text; a transport failure rejects with a ChatError that
 * names it (RELAY_UNREACHABLE, or what the platform can tell apart, such as a changed certificate).
 */
export type HttpExchange = (request: HttpRequest) => Promise<{ status: number; text: string }>;

export interface DeliveryServiceClientOptions {
  /** the relay's origin, e.g. https://relay.example:8443 */
  url: string;
  /** the session token from login (a function: the session's current one, when a login renews it) */
  token: string | (() => string);
  deviceId: string;
  exchange: HttpExchange;
  /**
   * The relay's WebSocket, when the client holds one: small application messages and cursor moves go over
   * it, everything else (and anything the socket cannot settle) over HTTP.
   */
  socket?: SocketAppends;
}

/** A cursor move a sync may find the relay short of: a cursor frame has no answer, so it may have been lost. */
const CURSOR_RESEND_AFTER_MS = 2_000;
/** Groups whose framed cursor moves are remembered until a sync shows them taken. */
const MAX_FRAMED_CURSORS = 1_024;
/**
 * The least time between two cursor frames for one group. A device reading a busy group then moves the
 * relay's cursor a few times a second instead of at every entry (each move is a frame to parse and a row
 * to write); a move within the interval is held and the furthest held one goes out when it ends. The cursor
 * only says what the relay may list as news and purge, never what this device has read, so a held move
 * lost with the process costs nothing but a re-sent move at the next sync.
 */
export const CURSOR_FRAME_INTERVAL_MS = 200;

export class DeliveryServiceClient {
  private readonly base: URL;
  /** cursor moves sent as frames and not yet seen taken, by group: when each went out */
  private readonly framedCursors = new Map<string, { seq: number; at: number }>();
  /** by group: when its last cursor frame went out, and the furthest move held since (with its timer) */
  private readonly cursorFrames = new Map<string, { at: number; held?: number; timer?: ReturnType<typeof setTimeout> }>();

  constructor(private readonly options: DeliveryServiceClientOptions) {
    this.base = new URL(options.url);
  }

  get deviceId(): string {
    return this.options.deviceId;
  }

  private async raw(method: "GET" | "POST", path: string, body?: unknown): Promise<{ status: number; json: unknown }> {
    const token = typeof this.options.token === "function" ? this.options.token() : this.options.token;
    const { status, text } = await this.options.exchange({
      method,
      url: new URL(path, this.base),
      headers: {
        accept: "application/json",
        authorization: `Bearer ${token}`,
        [DEVICE_ID_HEADER]: this.options.deviceId,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new ChatError("RELAY_UNREACHABLE", `relay answered ${method} ${path} with status ${status} and no JSON`);
    }
    return { status, json };
  }

  private async call<T extends z.ZodTypeAny>(method: "GET" | "POST", path: string, body: unknown, schema: T): Promise<z.infer<T>> {
    const { status, json } = await this.raw(method, path, body);
    return this.parse(method, path, status, json, schema);
  }

  private parse<T extends z.ZodTypeAny>(method: string, path: string, status: number, json: unknown, schema: T): z.infer<T> {
    if (status >= 400) {
      const error = ErrorBody.safeParse(json);
      if (!error.success) throw new ChatError("RELAY_UNREACHABLE", `relay answered ${method} ${path} with status ${status}`);
      throw new ChatError(error.data.error.code, error.data.error.message, { status });
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ChatError("RELAY_UNREACHABLE", `relay sent a malformed answer to ${path}: ${issue.path.join(".")}: ${issue.message}`);
    }
    return parsed.data;
  }

  /** A commit or application message: 409 EPOCH_CONFLICT is an answer here, not an error. */
  private async append(path: string, body: unknown): Promise<DsAppendResult> {
    const { status, json } = await this.raw("POST", path, body);
    if (status === 409) {
      const conflict = EpochConflictBody.safeParse(json);
      if (conflict.success) return { accepted: false, currentEpoch: conflict.data.error.currentEpoch };
    }
    return this.parse("POST", path, status, json, AppendResponse);
  }

  /** `replace`: the relay drops every package this device had before adding these. */
  putKeyPackages(body: { oneTime: { bytes: Uint8Array; notAfter: number }[]; lastResort?: { bytes: Uint8Array; notAfter: number }; replace?: boolean }) {
    const wire = (p: { bytes: Uint8Array; notAfter: number }) => ({ bytes: encodeBase64(p.bytes), notAfter: p.notAfter });
    return this.call(
      "POST",
      "/v2/key-packages",
      { oneTime: body.oneTime.map(wire), lastResort: body.lastResort && wire(body.lastResort), ...(body.replace ? { replace: true } : {}) },
      KeyPackageCountsResponse,
    );
  }

  keyPackageCount() {
    return this.call("GET", "/v2/key-packages/count", undefined, KeyPackageCountsResponse);
  }

  claimKeyPackages(username: string) {
    return this.call("POST", `/v2/users/${encodeURIComponent(username)}/key-packages/claim`, {}, ClaimKeyPackagesResponse);
  }

  createGroup(groupIdHex: string, members: DsDeviceRef[]) {
    return this.call("POST", "/v2/groups", { groupId: groupIdHex, members }, GroupStateResponse);
  }

  commit(groupIdHex: string, body: { epoch: number; id: string; bytes: Uint8Array; welcomes: (DsDeviceRef & { bytes: Uint8Array })[]; add: DsDeviceRef[]; remove: DsDeviceRef[] }) {
    return this.append(`/v2/groups/${groupIdHex}/commits`, {
      ...body,
      bytes: encodeBase64(body.bytes),
      welcomes: body.welcomes.map((w) => ({ username: w.username, deviceId: w.deviceId, bytes: encodeBase64(w.bytes) })),
    });
  }

  /**
   * A small message goes over the socket when there is one; the same id then goes over HTTP when the
   * socket cannot settle it (closed, lost mid-way, silent, storage busy): the relay stores one entry per id
   * and answers a second copy as a duplicate with the first seq. Refusals are the HTTP path's.
   */
  async sendApplication(groupIdHex: string, body: { epoch: number; id: string; bytes: Uint8Array }): Promise<DsAppendResult> {
    const wire = { epoch: body.epoch, id: body.id, bytes: encodeBase64(body.bytes) };
    const socket = this.options.socket;
    if (socket && body.bytes.length <= NOTICE_ENTRY_MAX_BYTES) {
      try {
        return await socket.append(groupIdHex, { deviceId: this.options.deviceId, ...wire });
      } catch (error) {
        if (!(error instanceof SocketAppendUnavailable)) throw error;
      }
    }
    return this.append(`/v2/groups/${groupIdHex}/messages`, wire);
  }

  async log(groupIdHex: string, after: number, limit: number): Promise<{ entries: LogEntryWire[]; epoch: number; lastSeq: number }> {
    return this.call("GET", `/v2/groups/${groupIdHex}/log?after=${after}&limit=${limit}`, undefined, LogResponse);
  }

  members(groupIdHex: string) {
    return this.call("GET", `/v2/groups/${groupIdHex}/members`, undefined, MembersResponse);
  }

  /**
   * Over the socket when it is open: the relay takes the move without answering, so the answer here is the
   * seq asked for (the relay's cursor only ever moves forward), and a refusal is not seen; sync() re-sends a
   * move it finds the relay short of. Otherwise POST, whose answer is the relay's cursor.
   */
  async advanceCursor(groupIdHex: string, seq: number): Promise<{ cursor: number }> {
    if (this.options.socket) {
      const now = Date.now();
      const last = this.cursorFrames.get(groupIdHex);
      if (last && now - last.at < CURSOR_FRAME_INTERVAL_MS) {
        last.held = Math.max(last.held ?? 0, seq);
        if (!last.timer) {
          last.timer = setTimeout(() => this.sendHeldCursor(groupIdHex), CURSOR_FRAME_INTERVAL_MS - (now - last.at));
          // A pending move never keeps a process alive (see CURSOR_FRAME_INTERVAL_MS).
          (last.timer as { unref?: () => void }).unref?.();
        }
        return { cursor: seq };
      }
      if (await this.options.socket.moveCursor(groupIdHex, this.options.deviceId, seq)) {
        this.cursorFrames.delete(groupIdHex);
        this.cursorFrames.set(groupIdHex, { at: now });
        this.forgetOldest(this.cursorFrames, (evicted) => clearTimeout(evicted.timer));
        this.framedCursors.delete(groupIdHex);
        this.framedCursors.set(groupIdHex, { seq, at: now });
        this.forgetOldest(this.framedCursors);
        return { cursor: seq };
      }
    }
    return this.call("POST", `/v2/groups/${groupIdHex}/cursor`, { seq }, CursorResponse);
  }

  /** The furthest move held for a group, once its interval is over: as a frame, or POSTed if the socket went. */
  private sendHeldCursor(groupIdHex: string): void {
    const entry = this.cursorFrames.get(groupIdHex);
    if (!entry || entry.held === undefined) return;
    const seq = entry.held;
    entry.held = undefined;
    entry.timer = undefined;
    // Not sent now, the relay's cursor stays behind until the next sync re-sends it.
    this.advanceCursor(groupIdHex, seq).catch(() => undefined);
  }

  /** The oldest first: a device in very many groups forgets the longest-standing entries. */
  private forgetOldest<V>(map: Map<string, V>, onEvict?: (value: V) => void): void {
    if (map.size <= MAX_FRAMED_CURSORS) return;
    const oldest = map.keys().next().value!;
    onEvict?.(map.get(oldest)!);
    map.delete(oldest);
  }

  async sync() {
    const answer = await this.call("GET", "/v2/sync", undefined, SyncResponse);
    this.checkFramedCursors(answer.groups);
    return answer;
  }

  /**
   * A cursor frame lost with its socket would leave the relay's cursor behind for good (a catch-up with
   * nothing new to read moves nothing), and the group listed with news at every sync: a move the relay is
   * still short of a while after it went out is sent again. A group not listed has its cursor at the end.
   */
  private checkFramedCursors(groups: readonly { groupId: string; cursor: number }[]): void {
    if (this.framedCursors.size === 0) return;
    const relayCursor = new Map(groups.map((g) => [g.groupId, g.cursor]));
    const now = Date.now();
    for (const [groupId, sent] of [...this.framedCursors]) {
      const cursor = relayCursor.get(groupId);
      if (cursor === undefined || cursor >= sent.seq) this.framedCursors.delete(groupId);
      else if (now - sent.at >= CURSOR_RESEND_AFTER_MS) {
        this.framedCursors.delete(groupId);
        this.advanceCursor(groupId, sent.seq).catch(() => undefined);
      }
    }
  }

  ackWelcome(id: string) {
    return this.call("POST", `/v2/welcomes/${encodeURIComponent(id)}/ack`, {}, OkResponse);
  }

  // ---- this user's devices (protocol/wire-devices.ts) ----

  /** Every device of this user, revoked ones included, and the relay's limit. */
  devices() {
    return this.call("GET", "/v2/devices", undefined, DevicesResponse);
  }

  /** Registers this device (one holding the identity key) with its MLS key, so that it is listed and counted. */
  registerSelf(body: { devicePublicKey: string; credential: Uint8Array; deviceName?: string }) {
    return this.call("POST", "/v2/devices/self", { devicePublicKey: body.devicePublicKey, credential: encodeBase64(body.credential), ...(body.deviceName ? { deviceName: body.deviceName } : {}) }, DeviceView);
  }

  /** This device's newest credential on file (a linked device re-authorised by another while it was away). */
  ownCredential() {
    return this.call("GET", "/v2/devices/self/credential", undefined, DeviceCredentialResponse);
  }

  deviceLink(code: string) {
    return this.call("GET", `/v2/device-links/${encodeURIComponent(code)}`, undefined, DeviceLinkView);
  }

  approveDeviceLink(code: string, credential: Uint8Array) {
    return this.call("POST", `/v2/device-links/${encodeURIComponent(code)}/approve`, { credential: encodeBase64(credential) }, DeviceView);
  }

  revokeDevice(deviceId: string) {
    return this.call("POST", `/v2/devices/${encodeURIComponent(deviceId)}/revoke`, {}, RevokeDeviceResponse);
  }

  putDeviceCredential(deviceId: string, credential: Uint8Array) {
    return this.call("POST", `/v2/devices/${encodeURIComponent(deviceId)}/credential`, { credential: encodeBase64(credential) }, DeviceCredentialResponse);
  }
}
