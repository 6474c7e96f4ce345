/**
 * The relay's wire protocol: HTTP request and response bodies and WebSocket frames, as zod schemas.
 * Documented for third-party clients in protocol/README.md. All bodies are JSON; all binary values are
 * 0x-prefixed hex; all times are Unix milliseconds unless named `...Seconds`.
 */
import { z } from "zod";
import { KEY_KIND_NAMES } from "./eip712";
import { ChatError, ERROR_CODES } from "./errors";
import { USERNAME_MAX_BYTES, USERNAME_MIN_BYTES } from "./username";

export const PROTOCOL_VERSION = 1;

/** Default limits; the relay may be configured lower or higher and announces them in GET /v1/info. */
export const DEFAULT_MAX_FRAME_BYTES = 64 * 1024;
export const DEFAULT_MAILBOX_TTL_MS = 30 * 24 * 60 * 60 * 1000;

const hex = (bytes: number) => z.string().regex(new RegExp(`^0x[0-9a-fA-F]{${bytes * 2}}$`), `expected ${bytes} bytes of hex`);

export const Username = z
  .string()
  .min(USERNAME_MIN_BYTES)
  .max(USERNAME_MAX_BYTES)
  .regex(/^[a-z0-9_]+$/, "use a-z, 0-9 and _");
export const Hex32 = hex(32);
export const PublicKey = hex(64);
export const Credential = hex(32);
/** EIP-2098 compact signature [r, vs]. */
export const CompactSignature = z.tuple([Hex32, Hex32]);
/** A 65-byte r || s || v signature (EIP-191 personal messages). */
export const Signature65 = hex(65);
/** Unix seconds, as the contract's deadlines. */
export const DeadlineSeconds = z.number().int().positive().max(2 ** 40);
/** Client-chosen message id: a UUID (RFC 9562) or any 8..64 url-safe characters. */
export const MessageId = z.string().regex(/^[A-Za-z0-9_-]{8,64}$/, "8 to 64 characters of A-Z a-z 0-9 _ -");

// ---------------------------------------------------------------------------------------------------
// HTTP. Errors: any status >= 400 carries ErrorBody. 4xx are the caller's fault, 503 is retryable.
// ---------------------------------------------------------------------------------------------------

/** A stable error code (protocol/errors.ts): the client reads it without a cast. */
export const ErrorCodeSchema = z.enum(ERROR_CODES);

export const ErrorBody = z.object({
  error: z.object({ code: ErrorCodeSchema, message: z.string(), retryAfterSeconds: z.number().optional() }),
});
export type ErrorBody = z.infer<typeof ErrorBody>;

/** GET /v1/info */
export const InfoResponse = z.object({
  protocolVersion: z.number().int(),
  chainId: z.string(),
  contractAddress: z.string(),
  maxFrameBytes: z.number().int(),
  mailboxTtlMs: z.number().int(),
});

/** GET /healthz: 200 when ok, 503 when degraded. */
export const HealthResponse = z.object({
  status: z.enum(["ok", "degraded"]),
  chain: z.object({ ok: z.boolean(), blockNumber: z.number().optional() }),
  storage: z.object({ ok: z.boolean(), kind: z.enum(["mysql", "memory"]) }),
  redis: z.object({ ok: z.boolean(), enabled: z.boolean() }),
  sync: z.object({ syncedBlock: z.number(), lagBlocks: z.number(), stale: z.boolean() }),
});

/**
 * POST /v1/credential-hash: the peppered hash the user must sign over in Register and UpdateCredential.
 * Rate limited like login. The relay recomputes it from `credential` when the signed request arrives.
 */
/**
 * POST /v1/credential-hash: answered only for a name nobody holds yet (registration) or, with
 * `Authorization: Bearer <token>`, for the token's own user (a password change); otherwise 409 USERNAME_TAKEN.
 */
export const CredentialHashRequest = z.object({ username: Username, credential: Credential });
export const CredentialHashResponse = z.object({ credentialHash: Hex32 });

/** POST /v1/register: signature by `publicKey` over Register(username, credentialHash, publicKey, nonce 0, deadline). */
export const RegisterRequest = z.object({
  username: Username,
  credential: Credential,
  publicKey: PublicKey,
  deadline: DeadlineSeconds,
  signature: CompactSignature,
});
/** Answer of every request that lands a transaction. */
export const TransactionResponse = z.object({ blockNumber: z.number().int(), transactionHash: Hex32 });

/** POST /v1/rotate: both signatures over RotateKey(username, newPublicKey, nonce, deadline). */
export const RotateRequest = z.object({
  username: Username,
  newPublicKey: PublicKey,
  deadline: DeadlineSeconds,
  currentKeySignature: CompactSignature,
  newKeySignature: CompactSignature,
});

/**
 * POST /v1/reset: the lost-device path. The relay checks `credential`, then submits requestReset: the new key
 * becomes current only after the contract's reset delay, during which the current key can cancel it.
 */
export const ResetRequest = z.object({
  username: Username,
  credential: Credential,
  newPublicKey: PublicKey,
  deadline: DeadlineSeconds,
  newKeySignature: CompactSignature,
});

/** Answer of POST /v1/reset: the block of the request and the unix time (chain clock) it becomes effective. */
export const ResetResponse = TransactionResponse.extend({ effectiveAt: z.number().int() });

/** POST /v1/reset/cancel: signature by the CURRENT key over CancelReset(username, nonce, deadline). */
export const CancelResetRequest = z.object({
  username: Username,
  deadline: DeadlineSeconds,
  signature: CompactSignature,
});

/** POST /v1/credential: a password change; signature by the current key over UpdateCredential. */
export const UpdateCredentialRequest = z.object({
  username: Username,
  credential: Credential,
  deadline: DeadlineSeconds,
  signature: CompactSignature,
});

/** POST /v1/login/challenge: a fresh, single-use challenge, valid for a short time. */
export const ChallengeRequest = z.object({ username: Username });
export const ChallengeResponse = z.object({ challenge: Hex32, expiresAt: z.number().int() });

/**
 * The text the user's current key signs to log in, as an EIP-191 personal message
 * (https://eips.ethereum.org/EIPS/eip-191, version 0x45). Binding the chain and contract stops a
 * signature for one deployment being used at another.
 */
export function loginMessage(params: { username: string; challenge: string; chainId: string; contractAddress: string }): string {
  return [
    "eth-chat login",
    `username: ${params.username}`,
    `challenge: ${params.challenge}`,
    `chain: ${params.chainId}`,
    `contract: ${params.contractAddress.toLowerCase()}`,
  ].join("\n");
}

/** POST /v1/login */
export const LoginRequest = z.object({
  username: Username,
  credential: Credential,
  challenge: Hex32,
  signature: Signature65,
});
/** POST /v1/logout with `Authorization: Bearer <token>`: the token is refused by every instance from now on. */
export const LogoutResponse = z.object({ loggedOut: z.literal(true) });

export const LoginResponse = z.object({
  token: z.string(),
  expiresAt: z.number().int(),
  keyIndex: z.number().int(),
});

/** GET /v1/users/:username/keys */
export const KeyRecordView = z.object({
  index: z.number().int(),
  publicKey: PublicKey,
  address: z.string(),
  kind: z.enum(KEY_KIND_NAMES),
  blockNumber: z.number().int(),
  timestamp: z.number().int(), // block time, Unix seconds
  transactionHash: Hex32,
});
export type KeyRecordView = z.infer<typeof KeyRecordView>;
/** A reset requested on chain, not yet effective or cancelled: `publicKey` becomes current at `effectiveAt`. */
export const PendingResetView = z.object({
  publicKey: PublicKey,
  address: z.string(),
  effectiveAt: z.number().int(), // Unix seconds of chain time
  blockNumber: z.number().int(),
  transactionHash: Hex32,
});
export type PendingResetView = z.infer<typeof PendingResetView>;
export const KeysResponse = z.object({
  username: Username,
  keys: z.array(KeyRecordView),
  /** the user's pending reset, null when none (absent from older relays) */
  pendingReset: PendingResetView.nullable().optional(),
  /** "cache": from the relay's MySQL cache; "chain": read from the chain on a cache miss. */
  source: z.enum(["cache", "chain"]),
  /** false when the relay could not reach the chain to confirm its cache is current. */
  verified: z.boolean(),
});
export type KeysResponse = z.infer<typeof KeysResponse>;

// ---------------------------------------------------------------------------------------------------
// WebSocket: GET WS_PATH with header `Authorization: Bearer <token>`, or (browsers cannot set headers on a
// WebSocket) with the two subprotocols `Sec-WebSocket-Protocol: eth-chat, bearer.<token>`; the relay then
// selects `eth-chat` and never echoes the token. Same checks either way: 401 before the upgrade otherwise.
// Each frame is one JSON text message, at most maxFrameBytes (else close 1009).
// ---------------------------------------------------------------------------------------------------

/** The WebSocket endpoint, on the relay's HTTPS origin. */
export const WS_PATH = "/v1/ws";

/** The subprotocol a client offers (and the relay selects) when it sends its token as a subprotocol. */
export const WS_SUBPROTOCOL = "eth-chat";

/**
 * Query parameter of WS_PATH (`?early=1`) by which a client asks for EarlyFrames: the application messages
 * of its groups handed on while they are being made durable, before they have a seq.
 */
export const WS_EARLY_PARAM = "early";
/** Prefix of the subprotocol that carries the session token: `bearer.<token>`. */
export const WS_BEARER_SUBPROTOCOL_PREFIX = "bearer.";
/** RFC 6455 subprotocols are RFC 7230 tokens: a session token with other characters must use the header. */
const SUBPROTOCOL_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** Whether `token` can travel as `bearer.<token>` in Sec-WebSocket-Protocol (at most 1024 characters, as the relay reads). */
export function isSubprotocolToken(token: string): boolean {
  return token.length > 0 && token.length <= 1024 && SUBPROTOCOL_TOKEN.test(token);
}

/**
 * The subprotocols a browser passes to `new WebSocket(url, protocols)` to authenticate with `token`;
 * throws when the token cannot be a subprotocol (the client must use the Authorization header then).
 */
export function wsAuthSubprotocols(token: string): [string, string] {
  if (!isSubprotocolToken(token)) throw new ChatError("BAD_REQUEST", "this session token cannot be sent as a WebSocket subprotocol; use the Authorization header");
  return [WS_SUBPROTOCOL, `${WS_BEARER_SUBPROTOCOL_PREFIX}${token}`];
}

/** GET /client-config.json (served with the web client): the relay's own deployment, a default on a local chain only. */
export const ClientConfigResponse = z.object({ chainId: z.string().regex(/^\d{1,78}$/), contractAddress: z.string().regex(/^0x[0-9a-fA-F]{40}$/) });
export type ClientConfigResponse = z.infer<typeof ClientConfigResponse>;

/** The envelope is opaque to the relay: a string produced by protocol/envelope (JSON of EnvelopeV1). */
export const EnvelopeText = z.string().min(1);

/** client -> relay: send an envelope to `to`. Re-sending the same id is idempotent. */
export const SendFrame = z.object({ type: z.literal("send"), id: MessageId, to: Username, envelope: EnvelopeText });
/** client -> relay: the recipient has processed message `id`; the relay forgets it. */
export const AckFrame = z.object({ type: z.literal("ack"), id: MessageId, from: Username });
/** client -> relay: is `user` connected? Answered with a PresenceFrame. */
export const PresenceQueryFrame = z.object({ type: z.literal("presence"), user: Username });

/** An MLS device id, as the /v2 routes take it in X-Device-Id (protocol/wire-v2.ts). */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
/** Standard base64 (RFC 4648 §4), as the /v2 routes carry MLS bytes. */
export const BASE64_PATTERN = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const BASE64_CHARACTERS = /^[A-Za-z0-9+/]*={0,2}$/;
/** Whether `text` is standard base64: the strings BASE64_PATTERN matches, checked in half its time. */
export const isStandardBase64 = (text: string): boolean => text.length % 4 === 0 && BASE64_CHARACTERS.test(text);
/** An MLS group id as the /v2 routes write it: 32 bytes as 64 lowercase hex characters (as GroupIdHex in wire-v2). */
const GROUP_ID_TEXT_PATTERN = /^[0-9a-f]{64}$/;
const GroupIdText = z.string().regex(GROUP_ID_TEXT_PATTERN, "expected 32 bytes as lowercase hex");
const LogCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const isLogCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;
/** The largest log entry (its MLS bytes, before base64) a group notice carries; a larger one is read from the log. */
export const NOTICE_ENTRY_MAX_BYTES = 8 * 1024;
/**
 * Append frames of one socket waiting to be stored at most: the relay refuses more with RATE_LIMITED, and a
 * client sends what would exceed it over HTTP instead.
 */
export const MAX_APPENDS_WAITING = 64;
/** An MLS message id as the Delivery Service takes it (DsMessageId in wire-v2). */
const DS_MESSAGE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
const DsMessageIdText = z.string().regex(DS_MESSAGE_ID_PATTERN, "1 to 64 characters of A-Z a-z 0-9 _ -");
const SMALL_MLS_BYTES_MAX_TEXT = 4 * Math.ceil(NOTICE_ENTRY_MAX_BYTES / 3);
/** The bytes standard base64 text decodes to: its length alone admits up to two more. */
const base64DecodedLength = (text: string) => (text.length / 4) * 3 - (text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0);
/** MLS bytes small enough to ride in one frame each way: at most NOTICE_ENTRY_MAX_BYTES, standard base64. */
const SmallMlsBytes = z
  .string()
  .min(4)
  .max(SMALL_MLS_BYTES_MAX_TEXT)
  .regex(BASE64_PATTERN, "expected standard base64")
  .refine((text) => base64DecodedLength(text) <= NOTICE_ENTRY_MAX_BYTES, { message: `at most ${NOTICE_ENTRY_MAX_BYTES} bytes` });
const isSmallMlsBytes = (value: unknown): value is string =>
  typeof value === "string" &&
  value.length >= 4 &&
  value.length <= SMALL_MLS_BYTES_MAX_TEXT &&
  isStandardBase64(value) &&
  base64DecodedLength(value) <= NOTICE_ENTRY_MAX_BYTES;

/**
 * client -> relay: device `deviceId` of the socket's user has processed group `groupId`'s log up to `seq`;
 * the same move, under the same rules, as POST /v2/groups/:groupId/cursor with that X-Device-Id. No answer
 * when it is taken; an ErrorFrame (NOT_GROUP_MEMBER, UNKNOWN_GROUP, BAD_REQUEST, ...) when it is not.
 */
export const CursorFrame = z.object({
  type: z.literal("cursor"),
  groupId: GroupIdText,
  deviceId: z.string().regex(DEVICE_ID_PATTERN, "1 to 64 characters of A-Z a-z 0-9 _ -"),
  seq: LogCount,
});
export type CursorFrame = z.infer<typeof CursorFrame>;
/**
 * client -> relay: device `deviceId` of the socket's user appends an MLS application message of at most
 * NOTICE_ENTRY_MAX_BYTES to group `groupId`'s log: the same append, under the same rules, as POST
 * /v2/groups/:groupId/messages with that X-Device-Id (durable before the answer; a re-send with the same id,
 * over either path, is answered as a duplicate with the first seq). Answered with an AppendedFrame, or an
 * ErrorFrame carrying this `id` (EPOCH_CONFLICT with `currentEpoch`, NOT_GROUP_MEMBER, RATE_LIMITED, ...).
 * A larger message, and every commit, goes over HTTP.
 */
export const AppendFrame = z.object({
  type: z.literal("append"),
  groupId: GroupIdText,
  deviceId: z.string().regex(DEVICE_ID_PATTERN, "1 to 64 characters of A-Z a-z 0-9 _ -"),
  epoch: LogCount,
  id: DsMessageIdText,
  bytes: SmallMlsBytes,
});
export type AppendFrame = z.infer<typeof AppendFrame>;
export const ClientFrame = z.discriminatedUnion("type", [SendFrame, AckFrame, PresenceQueryFrame, CursorFrame, AppendFrame]);
export type ClientFrame = z.infer<typeof ClientFrame>;
const isDeviceIdText = (value: unknown): value is string => typeof value === "string" && DEVICE_ID_PATTERN.test(value);
const isGroupIdText = (value: unknown): value is string => typeof value === "string" && GROUP_ID_TEXT_PATTERN.test(value);
/**
 * A well-formed AppendFrame or CursorFrame as ClientFrame parses it (unknown keys dropped), checked without
 * zod: they are most of what a busy relay reads, and zod took about 3.5 µs of an append. Anything else, a
 * malformed append or cursor frame included, gives undefined: ClientFrame then judges it, and says what is wrong.
 */
export function parseAppendOrCursorFrame(json: unknown): AppendFrame | CursorFrame | undefined {
  if (typeof json !== "object" || json === null) return undefined;
  const { type, groupId, deviceId } = json as Record<string, unknown>;
  if (!isGroupIdText(groupId) || !isDeviceIdText(deviceId)) return undefined;
  if (type === "cursor") {
    const { seq } = json as Record<string, unknown>;
    return isLogCount(seq) ? { type, groupId, deviceId, seq } : undefined;
  }
  if (type !== "append") return undefined;
  const { epoch, id, bytes } = json as Record<string, unknown>;
  if (!isLogCount(epoch) || typeof id !== "string" || !DS_MESSAGE_ID_PATTERN.test(id) || !isSmallMlsBytes(bytes)) return undefined;
  return { type, groupId, deviceId, epoch, id, bytes };
}

/** relay -> sender: message `id` is durable ("stored") or was delivered and acknowledged ("delivered"). */
export const AcceptedFrame = z.object({ type: z.literal("accepted"), id: MessageId, status: z.enum(["stored", "delivered"]) });
/** relay -> recipient: a message; `from` is the authenticated sender, `receivedAt` the relay's clock. */
export const MessageFrame = z.object({
  type: z.literal("message"),
  id: MessageId,
  from: Username,
  envelope: EnvelopeText,
  receivedAt: z.number().int(),
});
/** relay -> client: the mailbox backlog has been sent; live messages follow. */
export const ReadyFrame = z.object({ type: z.literal("ready"), pending: z.number().int() });
/** relay -> client: a request failed; `id` names the frame it answers when known. The socket stays open. */
export const ErrorFrame = z.object({
  type: z.literal("error"),
  code: ErrorCodeSchema,
  message: z.string(),
  id: z.string().optional(),
  retryable: z.boolean().optional(),
  /** for RATE_LIMITED: milliseconds until the relay takes this kind of frame again */
  retryAfterMs: z.number().int().optional(),
  /** for EPOCH_CONFLICT (an AppendFrame's): the group's epoch now; catch up from the log and send again */
  currentEpoch: z.number().int().nonnegative().optional(),
});
/**
 * relay -> the sender of an AppendFrame: the message is durable at `seq` of group `groupId` (as
 * AppendResponse in wire-v2). `cursor` is the sending device's cursor after the append: the relay moves it
 * past the new entry when it stood right before it. The socket that appended hears of its own entry by this
 * answer only, not by a GroupFrame (its user's other sockets get the notice as usual).
 */
export const AppendedFrame = z.object({
  type: z.literal("appended"),
  groupId: GroupIdText,
  id: DsMessageIdText,
  seq: LogCount,
  epoch: LogCount,
  duplicate: z.boolean(),
  cursor: LogCount,
});
export type AppendedFrame = z.infer<typeof AppendedFrame>;
/** relay -> sender: `to`'s device acknowledged message `id` (sent to every connection of the sender, on any instance). */
export const ReceiptFrame = z.object({ type: z.literal("receipt"), id: MessageId, to: Username, status: z.literal("delivered") });
/** relay -> client: whether `user` is connected to this relay instance (other instances are not asked). */
export const PresenceFrame = z.object({ type: z.literal("presence"), user: Username, online: z.boolean() });
/**
 * A log entry as a group notice carries it: the shape of LogEntryWire (GET /v2/groups/:groupId/log, in
 * protocol/wire-v2.ts), with at most NOTICE_ENTRY_MAX_BYTES of MLS bytes.
 */
export const NoticeEntry = z.object({
  seq: LogCount,
  epoch: LogCount,
  kind: z.enum(["handshake", "application"]),
  sender: z.object({ username: Username, deviceId: z.string().regex(DEVICE_ID_PATTERN) }),
  id: DsMessageIdText,
  bytes: SmallMlsBytes,
  receivedAt: LogCount,
});
export type NoticeEntry = z.infer<typeof NoticeEntry>;
/**
 * relay -> every member user of MLS group `groupId`: its log has grown to at least `seq` (an entry of epoch
 * `epoch`). A hint: read GET /v2/groups/:groupId/log after your cursor. When the entry at `seq` is small,
 * the relay may hand it along in `entry` (the bytes the log would return, no more trusted than them): a
 * device whose cursor is exactly seq - 1 may apply it, with every check of a log read, instead of reading.
 * Older clients ignore `entry`; a malformed one is dropped and the frame read as the bare hint. Frames may be coalesced (only the newest seq of a group is kept while the
 * socket is backed up; a coalesced one carries no entry) and may arrive out of order.
 */
export const GroupFrame = z.object({ type: z.literal("group"), groupId: GroupIdText, seq: LogCount, epoch: LogCount, entry: NoticeEntry.optional().catch(undefined) });
/** An application message as an EarlyFrame carries it: a NoticeEntry without its seq, which it does not have yet. */
export const EarlyEntry = NoticeEntry.omit({ seq: true }).extend({ kind: z.literal("application") });
export type EarlyEntry = z.infer<typeof EarlyEntry>;
/**
 * relay -> the member users' sockets on this relay instance that asked for them (WS_EARLY_PARAM), but the
 * appending one: a small application message of group `groupId`, handed on as the relay starts to make it
 * durable, before it has a seq and before the sender hears "appended". It may never be stored (refused, or
 * lost with the relay), and it comes again with its seq (a GroupFrame, or a log read) when it is. A device
 * in the entry's epoch may apply it at once, with every check of a log read, and must then remember its
 * `id`: the log entry with that id is passed over (its cursor moves, nothing is applied or shown again).
 * A device that cannot apply it (another epoch, a refusal) drops it and reads the log entry as usual.
 * Only a hint, never trusted more than the log: dropped while the socket is backed up.
 */
export const EarlyFrame = z.object({ type: z.literal("early"), groupId: GroupIdText, entry: EarlyEntry });
export type EarlyFrame = z.infer<typeof EarlyFrame>;
/** relay -> a user one of whose devices has a new Welcome into `groupId`: read it with GET /v2/sync. */
export const WelcomeFrame = z.object({ type: z.literal("welcome"), groupId: GroupIdText });
/** The Delivery Service's live hints, as routed between relay instances. */
export const GroupNotice = z.discriminatedUnion("type", [GroupFrame, WelcomeFrame]);
export type GroupNotice = z.infer<typeof GroupNotice>;
export const ServerFrame = z.discriminatedUnion("type", [
  AcceptedFrame,
  MessageFrame,
  ReadyFrame,
  ErrorFrame,
  ReceiptFrame,
  PresenceFrame,
  GroupFrame,
  WelcomeFrame,
  AppendedFrame,
  EarlyFrame,
]);
export type ServerFrame = z.infer<typeof ServerFrame>;

/** WebSocket close codes (RFC 6455 §7.4.1). */
export const CLOSE_CODES = {
  normal: 1000,
  goingAway: 1001,
  policy: 1008,
  tooBig: 1009,
  internal: 1011,
  /** the relay cannot serve this connection now (storage down, reader too slow): reconnect after a pause */
  tryAgainLater: 1013,
  sessionExpired: 4001,
} as const;

// ---------------------------------------------------------------------------------------------------
// The sender's status query.
// ---------------------------------------------------------------------------------------------------

/** At most this many ids per POST /v1/messages/status. */
export const MAX_STATUS_IDS = 500;
/** POST /v1/messages/status (Bearer token): where the messages the caller sent to `to` under `ids` stand. */
export const MessageStatusRequest = z.object({ to: Username, ids: z.array(MessageId).min(1).max(MAX_STATUS_IDS) });
/** Every distinct asked id is in one list; "unknown" ones were never stored, expired or were lost: send them again. */
export const MessageStatusResponse = z.object({ pending: z.array(z.string()), delivered: z.array(z.string()), unknown: z.array(z.string()) });
export type MessageStatusResponse = z.infer<typeof MessageStatusResponse>;
