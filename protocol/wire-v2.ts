/**
 * Messages v2: the relay as MLS Delivery Service (RFC 9420 §3.2) over HTTP, as zod schemas. The relay never
 * parses MLS; every MLS message is opaque bytes carried as standard base64 (RFC 4648 §4) in JSON, with its
 * size bounded here. Group ids are 32 bytes as 64 lowercase hex characters (they appear in paths).
 * Every route needs `Authorization: Bearer <session token>` and `X-Device-Id`. Documented in
 * protocol/README.md ("Messages v2 (MLS)").
 */
import { z } from "zod";
import { BASE64_PATTERN, DEVICE_ID_PATTERN, Username } from "./wire";

export { DEVICE_ID_PATTERN };
export const DEVICE_ID_HEADER = "x-device-id";

/** Bounds of the Delivery Service, in bytes before base64. */
export const V2_LIMITS = {
  keyPackageBytes: 16 * 1024,
  welcomeBytes: 1024 * 1024,
  handshakeBytes: 1024 * 1024,
  applicationBytes: 256 * 1024,
  oneTimeKeyPackagesPerUpload: 200,
  groupDevices: 2000,
  readLimit: 1000,
  welcomesPerSync: 100,
  devicesPerUser: 16,
} as const;

/** How large one request body may be: a commit with its welcomes, as base64 in JSON. */
export const MAX_V2_BODY_BYTES = 4 * 1024 * 1024;

/** Base64 of 1..maxBytes bytes. */
export const base64Of = (maxBytes: number) =>
  z
    .string()
    .min(4)
    .max(4 * Math.ceil(maxBytes / 3))
    .regex(BASE64_PATTERN, "expected standard base64");

/** Uint8Array to standard base64 without Buffer (protocol/ also runs in a browser). */
export function encodeBase64(bytes: Uint8Array): string {
  let binary = "";
  const CHUNK = 0x8000;
  for (let i = 0; i < bytes.length; i += CHUNK) binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  return btoa(binary);
}

export function decodeBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

const GROUP_ID_HEX_PATTERN = /^[0-9a-f]{64}$/;
export const GroupIdHex = z.string().regex(GROUP_ID_HEX_PATTERN, "expected 32 bytes as lowercase hex");
/** GroupIdHex as a plain test, for paths that check every message (a zod parse costs more than the rest of the check). */
export const isGroupIdHex = (value: unknown): value is string => typeof value === "string" && GROUP_ID_HEX_PATTERN.test(value);
export const DeviceId = z.string().regex(DEVICE_ID_PATTERN, "1 to 64 characters of A-Z a-z 0-9 _ -");
/** Chosen by the sender; a retried append with the same id is stored once. */
export const DsMessageId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, "1 to 64 characters of A-Z a-z 0-9 _ -");
const Count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
export const DeviceRefSchema = z.object({ username: Username, deviceId: DeviceId });

/** POST /v2/key-packages */
export const KeyPackageUploadSchema = z.object({ bytes: base64Of(V2_LIMITS.keyPackageBytes), notAfter: Count });
export const PutKeyPackagesRequest = z.object({
  oneTime: z.array(KeyPackageUploadSchema).max(V2_LIMITS.oneTimeKeyPackagesPerUpload),
  lastResort: KeyPackageUploadSchema.optional(),
  /** drop every package this device had before adding these (after a key rotation: the old ones carry the old credential) */
  replace: z.boolean().optional(),
});
/** answer of POST /v2/key-packages and GET /v2/key-packages/count */
export const KeyPackageCountsResponse = z.object({ oneTime: Count, lastResort: z.boolean() });

/** POST /v2/users/:username/key-packages/claim */
export const ClaimKeyPackagesResponse = z.object({
  keyPackages: z
    .array(z.object({ deviceId: DeviceId, bytes: base64Of(V2_LIMITS.keyPackageBytes), notAfter: Count, lastResort: z.boolean() }))
    .max(V2_LIMITS.devicesPerUser),
});

/** POST /v2/groups */
export const CreateGroupRequest = z.object({ groupId: GroupIdHex, members: z.array(DeviceRefSchema).min(1).max(V2_LIMITS.groupDevices) });
export const GroupStateResponse = z.object({ groupId: GroupIdHex, epoch: Count, lastSeq: Count });

/** POST /v2/groups/:groupId/commits */
export const CommitRequest = z.object({
  epoch: Count,
  id: DsMessageId,
  bytes: base64Of(V2_LIMITS.handshakeBytes),
  welcomes: z.array(DeviceRefSchema.extend({ bytes: base64Of(V2_LIMITS.welcomeBytes) })).max(V2_LIMITS.groupDevices).default([]),
  add: z.array(DeviceRefSchema).max(V2_LIMITS.groupDevices).default([]),
  remove: z.array(DeviceRefSchema).max(V2_LIMITS.groupDevices).default([]),
});
/** POST /v2/groups/:groupId/messages */
export const ApplicationRequest = z.object({ epoch: Count, id: DsMessageId, bytes: base64Of(V2_LIMITS.applicationBytes) });
/**
 * 200 answer of both appends; a refused commit is 409 EPOCH_CONFLICT with `currentEpoch` in the error.
 * `cursor` (application messages; absent from older relays): the sending device's cursor after the
 * append, moved past the new entry when it stood right before it.
 */
export const AppendResponse = z.object({ accepted: z.literal(true), seq: Count, epoch: Count, duplicate: z.boolean(), cursor: Count.optional() });
export const EpochConflictBody = z.object({
  error: z.object({ code: z.literal("EPOCH_CONFLICT"), message: z.string(), currentEpoch: Count }),
});

/** GET /v2/groups/:groupId/log?after=SEQ&limit=N */
export const LogEntrySchema = z.object({
  seq: Count,
  epoch: Count,
  kind: z.enum(["handshake", "application"]),
  sender: DeviceRefSchema,
  id: DsMessageId,
  bytes: base64Of(V2_LIMITS.handshakeBytes),
  receivedAt: Count,
});
export type LogEntryWire = z.infer<typeof LogEntrySchema>;
export const LogResponse = z.object({ entries: z.array(LogEntrySchema).max(V2_LIMITS.readLimit), epoch: Count, lastSeq: Count });

/** GET /v2/groups/:groupId/members: membership as the relay sees it (the client trusts its own tree). */
export const MembersResponse = z.object({ members: z.array(DeviceRefSchema.extend({ cursor: Count })) });

/** POST /v2/groups/:groupId/cursor */
export const CursorRequest = z.object({ seq: Count });
export const CursorResponse = z.object({ cursor: Count });

/** GET /v2/sync */
export const WelcomeWire = z.object({ id: z.string().regex(/^[1-9][0-9]{0,19}$/), groupId: GroupIdHex, bytes: base64Of(V2_LIMITS.welcomeBytes), receivedAt: Count });
export const SyncResponse = z.object({
  groups: z.array(z.object({ groupId: GroupIdHex, cursor: Count, lastSeq: Count, epoch: Count })),
  welcomes: z.array(WelcomeWire).max(V2_LIMITS.welcomesPerSync),
});

export const OkResponse = z.object({ ok: z.literal(true) });
