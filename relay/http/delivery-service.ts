/**
 * Messages v2: the relay as MLS Delivery Service over HTTP (protocol/wire-v2.ts). The relay only orders and
 * stores opaque MLS bytes per (user, device); members authenticate each other's leaves against the chain
 * themselves, so nothing here is trusted by a client beyond ordering and availability.
 * Every route needs the session token (the same check as the WebSocket upgrade) and X-Device-Id.
 * Each stored log entry and welcome is announced to the member users' open WebSockets (see GroupFrame in
 * protocol/wire.ts), so that clients read the log at once instead of polling. A small application message
 * rides along in its notice, so that a device that is caught up applies it without reading the log: the
 * bytes are the ones the log would return, and the client checks them the same way.
 * Cursor moves and small application messages also arrive over the WebSocket (CursorFrame, AppendFrame):
 * createDeliveryService hands messaging the same calls, with the same rules and announcements.
 */
import express, { Router, type Request, type Response } from "express";
import { ChatError } from "../../protocol/errors";
import {
  ApplicationRequest,
  CommitRequest,
  CreateGroupRequest,
  CursorRequest,
  DEVICE_ID_HEADER,
  DEVICE_ID_PATTERN,
  GroupIdHex,
  isGroupIdHex,
  MAX_V2_BODY_BYTES,
  PutKeyPackagesRequest,
  V2_LIMITS,
} from "../../protocol/wire-v2";
import { NOTICE_ENTRY_MAX_BYTES, Username, type GroupNotice, type NoticeEntry } from "../../protocol/wire";
import { verifySessionToken, type SessionClaims } from "../sessions";
import { DsError, type AppendResult, type DeliveryServiceStore, type DeviceRef, type GroupMember } from "../storage/ds-types";
import type { HttpContext } from "./context";
import { parseWith } from "./errors";

/** A welcome is kept this long for a device that is offline (its key package's lifetime bounds it anyway). */
const WELCOME_TTL_MS = 30 * 24 * 3600 * 1000;
/** Claims per caller per rate-limit window: each claim uses up one-time packages of other users' devices. */
const CLAIMS_PER_WINDOW = 120;

const toHex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const fromHex = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
// Node's native base64 for the hot path (protocol/'s browser-safe coders loop in JavaScript); the wire
// schemas have checked the text already.
const fromBase64 = (text: string) => new Uint8Array(Buffer.from(text, "base64"));
const toBase64 = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");

/** Store refusals as the API's stable codes; anything else is the storage failing (503). */
function fromDs(error: unknown): never {
  if (error instanceof ChatError) throw error;
  if (error instanceof DsError) {
    switch (error.code) {
      case "DS_BAD_REQUEST":
        throw new ChatError("BAD_REQUEST", error.message);
      case "DS_LIMIT":
        throw new ChatError("LIMIT_EXCEEDED", error.message);
      case "DS_UNKNOWN_GROUP":
        throw new ChatError("UNKNOWN_GROUP", "no such group");
      case "DS_GROUP_EXISTS":
        throw new ChatError("GROUP_EXISTS", "a group with this id exists");
      case "DS_NOT_MEMBER":
        throw new ChatError("NOT_GROUP_MEMBER", "this device is not a member of the group");
      default:
        break;
    }
  }
  throw new ChatError("STORAGE_UNAVAILABLE", "storage unavailable");
}

/**
 * Hands a notice to every open connection of `usernames`, on this relay instance and the others, except
 * `origin` (the connection whose append it announces: its answer told it already).
 */
export type GroupNotify = (usernames: Iterable<string>, notice: GroupNotice, origin?: object) => void;

/**
 * Hands an early frame (`text`, see EarlyFrame in protocol/wire.ts) to the connections of `usernames` on this
 * relay instance that asked for them, except `origin` (the connection that appended).
 */
export type EarlyNotify = (usernames: Iterable<string>, text: string, origin?: object) => void;

/**
 * Groups whose member users and epoch this relay instance remembers, from their last stored application
 * message, to hand the next one on early. Bounded: the longest unused are forgotten.
 */
const MAX_EARLY_GROUPS = 10_000;

/** Moves `device`'s cursor in group `groupIdHex` (as POST /v2/groups/:groupId/cursor); refusals as ChatErrors. */
export type CursorMover = (device: DeviceRef, groupIdHex: string, seq: number) => Promise<number>;

/**
 * Appends an application message as `sender` (as POST /v2/groups/:groupId/messages, `bytes` in base64 as
 * the wire carries them) and announces it to the group; refusals as ChatErrors, an epoch conflict as the result.
 */
export type ApplicationAppender = (
  sender: DeviceRef,
  groupIdHex: string,
  body: { epoch: number; id: string; bytes: string },
  /** the WebSocket connection that appended, which the notice skips */
  origin?: object,
  /** called with the result as soon as it is durable, right before the entry's notices go out */
  answer?: (result: AppendResult) => void,
) => Promise<AppendResult>;

/** The Delivery Service of one relay: its HTTP routes, and the same calls for the WebSocket's frames. */
export interface DeliveryService {
  routes: Router;
  moveCursor: CursorMover;
  appendApplication: ApplicationAppender;
  /** whether one group's appends are stored in call order (see DeliveryServiceStore.appendsInCallOrder) */
  appendsInCallOrder: () => boolean;
}

/** An append the Delivery Service announces to the group's members once it is stored. */
interface Announcement {
  groupId: Uint8Array;
  result: AppendResult;
  membersBefore?: GroupMember[];
  welcomeRecipients?: DeviceRef[];
  /** the stored entry, handed along when small (never for a duplicate: its first attempt's entry is the stored one) */
  entry?: Omit<NoticeEntry, "seq">;
  origin?: object;
}

const usernamesOf = (members: readonly DeviceRef[]) => new Set(members.map((m) => m.username));

async function ds<T>(task: Promise<T>): Promise<T> {
  try {
    return await task;
  } catch (error) {
    fromDs(error);
  }
}

export function createDeliveryService(ctx: HttpContext, store: DeliveryServiceStore, notify?: GroupNotify, early?: EarlyNotify): DeliveryService {
  const router = Router();
  let announceFailedAt = -Infinity;

  /**
   * By group (hex): its member users and epoch as the store named them with its last stored application
   * message here. Another instance's commit leaves it stale until the next one is stored here; an early
   * frame it sends meanwhile names its epoch, and members of another epoch drop it (EarlyFrame's rules).
   */
  const earlyGroups = new Map<string, { epoch: number; users: ReadonlySet<string> }>();
  const rememberGroup = (groupIdHex: string, epoch: number, usernames: ReadonlySet<string>) => {
    if (!early) return;
    const known = earlyGroups.get(groupIdHex);
    earlyGroups.delete(groupIdHex);
    // A late message (of an epoch before the group's) does not take the group back to its epoch.
    earlyGroups.set(groupIdHex, { epoch: Math.max(epoch, known?.epoch ?? 0), users: usernames });
    if (earlyGroups.size > MAX_EARLY_GROUPS) earlyGroups.delete(earlyGroups.keys().next().value!);
  };
  /** Before the durable write: the members' connections here hear of a small message at once. */
  const handOnEarly = (groupIdHex: string, entry: Omit<NoticeEntry, "seq">, origin?: object) => {
    const known = earlyGroups.get(groupIdHex);
    // A sender the store did not name is refused by it anyway: nothing goes out for it.
    if (!early || !known || known.epoch !== entry.epoch || !known.users.has(entry.sender.username)) return;
    early(known.users, JSON.stringify({ type: "early", groupId: groupIdHex, entry }), origin);
  };

  /** The notices of an accepted append, to the group's member users `after` it (see announce). */
  function tellMembers(params: Announcement, result: AppendResult & { accepted: true }, after: Iterable<string>): void {
    if (!notify) return;
    const groupId = toHex(params.groupId);
    const users = new Set(after);
    // An application message's members are the group's as the store has it: the next one may go early.
    if (params.entry) rememberGroup(groupId, result.epoch, users);
    else for (const username of usernamesOf(params.membersBefore ?? [])) users.add(username);
    const notice: GroupNotice = { type: "group", groupId, seq: result.seq, epoch: result.epoch };
    if (params.entry && !result.duplicate) notice.entry = { ...params.entry, seq: result.seq };
    notify(users, notice, params.origin);
    // A retried commit stored nothing new: its first attempt's welcomes were announced then.
    const welcomed = result.duplicate ? [] : (params.welcomeRecipients ?? []);
    if (welcomed.length > 0) notify(usernamesOf(welcomed), { type: "welcome", groupId });
  }

  /**
   * After the answer: tells the group's member users (as the store has them after the append) that the log
   * grew, plus, for a commit, the users it removed entirely (they learn of their removal) and the recipients
   * of its new welcomes. A failure only delays them until they next read the log, so it is logged, not returned.
   */
  function announce(params: Announcement): void {
    const { result } = params;
    if (!notify || !result.accepted) return;
    // At once when the store named the members: with the answer just before (see ApplicationAppender), a
    // socket hears of a batch's entries in seq order, answers and notices alike, and finds no gap to read.
    if (result.memberUsernames) return tellMembers(params, result, result.memberUsernames);
    store.memberUsernames(params.groupId).then(
      (members) => tellMembers(params, result, members),
      (error) => {
        const now = ctx.clock();
        if (now - announceFailedAt < 5_000) return;
        announceFailedAt = now;
        ctx.logger.warn({ err: { message: error instanceof Error ? error.message : String(error) } }, "group notice not sent: members unreadable");
      },
    );
  }
  // Commits carry welcomes for many members: a larger body limit than the v1 routes, on /v2 only.
  router.use("/v2", express.json({ limit: MAX_V2_BODY_BYTES }));

  /**
   * The calling device: a valid session token and a well-formed device id, or 401/400. The session the /v2
   * gate checked (relay/http/devices.ts: revocations and the account too) is taken as it is.
   */
  function caller(req: Request, res: Response): DeviceRef {
    const match = /^Bearer ([A-Za-z0-9_.~+/=-]+)$/.exec(req.headers.authorization ?? "");
    const claims = (res.locals.session as SessionClaims | undefined) ?? verifySessionToken({ secret: ctx.settings.sessionSecret, token: match?.[1], now: ctx.clock() });
    const deviceId = req.headers[DEVICE_ID_HEADER];
    if (typeof deviceId !== "string" || !DEVICE_ID_PATTERN.test(deviceId)) {
      throw new ChatError("BAD_REQUEST", "X-Device-Id must be 1 to 64 characters of A-Z a-z 0-9 _ -", { field: DEVICE_ID_HEADER });
    }
    return { username: claims.sub, deviceId };
  }

  function groupIdOf(req: Request): Uint8Array {
    return fromHex(parseWith(GroupIdHex, req.params.groupId, "groupId"));
  }

  function sendAppend(res: Response, result: AppendResult): void {
    if (result.accepted) {
      const cursor = result.senderCursor === undefined ? {} : { cursor: result.senderCursor };
      res.json({ accepted: true, seq: result.seq, epoch: result.epoch, duplicate: result.duplicate, ...cursor });
      return;
    }
    // The loser of an epoch learns the current one, catches up from the log and retries.
    res.status(409).json({
      error: { code: "EPOCH_CONFLICT", message: `the group is at epoch ${result.currentEpoch}; catch up and retry`, currentEpoch: result.currentEpoch },
    });
  }

  router.post("/v2/key-packages", async (req, res) => {
    const device = caller(req, res);
    const body = parseWith(PutKeyPackagesRequest, req.body);
    const decode = (p: { bytes: string; notAfter: number }) => ({ bytes: fromBase64(p.bytes), notAfter: p.notAfter });
    const counts = await ds(
      store.putKeyPackages({
        device,
        oneTime: body.oneTime.map(decode),
        lastResort: body.lastResort && decode(body.lastResort),
        replace: body.replace === true,
        now: ctx.clock(),
      }),
    );
    res.json(counts);
  });

  router.get("/v2/key-packages/count", async (req, res) => {
    const device = caller(req, res);
    res.json(await ds(store.keyPackageCounts({ device, now: ctx.clock() })));
  });

  router.post("/v2/users/:username/key-packages/claim", async (req, res) => {
    const device = caller(req, res);
    const username = parseWith(Username, req.params.username, "username");
    await ctx.limits.limiter.hit([{ key: `kp-claim:user:${device.username}`, limit: CLAIMS_PER_WINDOW }]);
    const claimed = await ds(store.claimKeyPackages({ username, now: ctx.clock() }));
    if (claimed.length === 0) throw new ChatError("NOT_FOUND", `${username} has no key packages on this relay`);
    res.json({ keyPackages: claimed.map((k) => ({ deviceId: k.deviceId, bytes: toBase64(k.bytes), notAfter: k.notAfter, lastResort: k.lastResort })) });
  });

  router.post("/v2/groups", async (req, res) => {
    const device = caller(req, res);
    const body = parseWith(CreateGroupRequest, req.body);
    if (!body.members.some((m) => m.username === device.username && m.deviceId === device.deviceId)) {
      throw new ChatError("BAD_REQUEST", "the creating device must be one of the members", { field: "members" });
    }
    const group = await ds(store.createGroup({ groupId: fromHex(body.groupId), members: body.members, now: ctx.clock() }));
    res.json({ groupId: toHex(group.groupId), epoch: group.epoch, lastSeq: group.lastSeq });
  });

  /** A user's POSTed appends per window, all its devices together (the WebSocket's appends count against the socket's send rate). */
  const limitAppends = (sender: DeviceRef) => ctx.limits.limiter.hit([{ key: `ds-append:user:${sender.username}`, limit: ctx.settings.appendsPerUser }]);

  router.post("/v2/groups/:groupId/commits", async (req, res) => {
    const sender = caller(req, res);
    const groupId = groupIdOf(req);
    const body = parseWith(CommitRequest, req.body);
    await limitAppends(sender);
    const now = ctx.clock();
    // Who was a member before a commit that removes: a removed user hears of the commit that removed it.
    // A failed read only costs those users the hint, never the commit.
    const membersBefore = notify && body.remove.length > 0 ? await store.members(groupId).catch(() => []) : [];
    // The group's members and epoch change with the commit: no early frame until its next message is stored.
    earlyGroups.delete(toHex(groupId));
    const result = await ds(
      store.appendCommit({
        groupId,
        epoch: body.epoch,
        sender,
        messageId: body.id,
        bytes: fromBase64(body.bytes),
        receivedAt: now,
        addMembers: body.add,
        removeMembers: body.remove,
        welcomes: body.welcomes.map((w) => ({
          recipient: { username: w.username, deviceId: w.deviceId },
          bytes: fromBase64(w.bytes),
          expiresAt: now + WELCOME_TTL_MS,
        })),
      }),
    );
    earlyGroups.delete(toHex(groupId));
    sendAppend(res, result);
    announce({ groupId, result, membersBefore, welcomeRecipients: body.welcomes.map((w) => ({ username: w.username, deviceId: w.deviceId })) });
  });

  /** One append for both paths: stored durably, then announced (a notice carries the entry when it is small). */
  async function appendApplication(
    sender: DeviceRef,
    groupId: Uint8Array,
    body: { epoch: number; id: string; bytes: string },
    origin?: object,
    answer?: (result: AppendResult) => void,
  ): Promise<AppendResult> {
    const bytes = fromBase64(body.bytes);
    const receivedAt = ctx.clock();
    const groupIdHex = toHex(groupId);
    // The request's base64 is the log's own encoding of the same bytes: handed on as it came.
    const entry = bytes.length <= NOTICE_ENTRY_MAX_BYTES ? { epoch: body.epoch, kind: "application" as const, sender, id: body.id, bytes: body.bytes, receivedAt } : undefined;
    if (entry) handOnEarly(groupIdHex, entry, origin);
    const result = await ds(
      store.appendApplication({
        groupId,
        epoch: body.epoch,
        sender,
        messageId: body.id,
        bytes,
        receivedAt,
        withMemberUsernames: notify !== undefined,
      }),
    );
    answer?.(result);
    announce({ groupId, result, entry, origin });
    return result;
  }

  router.post("/v2/groups/:groupId/messages", async (req, res) => {
    const sender = caller(req, res);
    const groupId = groupIdOf(req);
    const body = parseWith(ApplicationRequest, req.body);
    await limitAppends(sender);
    sendAppend(res, await appendApplication(sender, groupId, body));
  });

  router.get("/v2/groups/:groupId/log", async (req, res) => {
    const device = caller(req, res);
    const groupId = groupIdOf(req);
    const after = Number(req.query.after ?? 0);
    const limit = Number(req.query.limit ?? 100);
    if (!Number.isSafeInteger(after) || after < 0) throw new ChatError("BAD_REQUEST", "after must be a non-negative integer", { field: "after" });
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > V2_LIMITS.readLimit) {
      throw new ChatError("BAD_REQUEST", `limit must be 1 to ${V2_LIMITS.readLimit}`, { field: "limit" });
    }
    const page = await ds(store.readAsMember({ device, groupId, afterSeq: after, limit }));
    res.json({
      epoch: page.epoch,
      lastSeq: page.lastSeq,
      entries: page.entries.map((e) => ({
        seq: e.seq,
        epoch: e.epoch,
        kind: e.kind,
        sender: e.sender,
        id: e.messageId,
        bytes: toBase64(e.bytes),
        receivedAt: e.receivedAt,
      })),
    });
  });

  router.get("/v2/groups/:groupId/members", async (req, res) => {
    const device = caller(req, res);
    const groupId = groupIdOf(req);
    const members = await ds(store.members(groupId));
    if (!members.some((m) => m.username === device.username && m.deviceId === device.deviceId)) {
      throw new ChatError("NOT_GROUP_MEMBER", "this device is not a member of the group");
    }
    res.json({ members: members.map((m) => ({ username: m.username, deviceId: m.deviceId, cursor: m.cursor })) });
  });

  router.post("/v2/groups/:groupId/cursor", async (req, res) => {
    const device = caller(req, res);
    const groupId = groupIdOf(req);
    const body = parseWith(CursorRequest, req.body);
    res.json({ cursor: await ds(store.advanceCursor({ device, groupId, seq: body.seq })) });
  });

  router.get("/v2/sync", async (req, res) => {
    const device = caller(req, res);
    const [groups, welcomes] = await Promise.all([
      ds(store.pendingFor(device)),
      ds(store.welcomes({ device, now: ctx.clock(), limit: V2_LIMITS.welcomesPerSync })),
    ]);
    res.json({
      groups: groups.map((g) => ({ groupId: toHex(g.groupId), cursor: g.cursor, lastSeq: g.lastSeq, epoch: g.epoch })),
      welcomes: welcomes.map((w) => ({ id: w.id, groupId: toHex(w.groupId), bytes: toBase64(w.bytes), receivedAt: w.receivedAt })),
    });
  });

  router.post("/v2/welcomes/:id/ack", async (req, res) => {
    const device = caller(req, res);
    const id = req.params.id;
    if (typeof id !== "string" || !/^[1-9][0-9]{0,19}$/.test(id)) throw new ChatError("BAD_REQUEST", "welcome id must be a positive integer", { field: "id" });
    await ds(store.ackWelcome({ device, id }));
    res.json({ ok: true });
  });

  const groupIdFrom = (groupIdHex: string) => fromHex(isGroupIdHex(groupIdHex) ? groupIdHex : parseWith(GroupIdHex, groupIdHex, "groupId"));
  return {
    routes: router,
    // The cursor move is the store's own: batched with the others where the store batches.
    moveCursor: async (device, groupIdHex, seq) => ds(store.advanceCursor({ device, groupId: groupIdFrom(groupIdHex), seq })),
    appendApplication: async (sender, groupIdHex, body, origin, answer) => appendApplication(sender, groupIdFrom(groupIdHex), body, origin, answer),
    appendsInCallOrder: () => store.appendsInCallOrder,
  };
}
