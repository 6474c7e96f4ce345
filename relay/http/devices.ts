/**
 * Several devices per user (protocol/wire-devices.ts): a new device asks to be linked and gets a short code;
 * a device of the same user that holds the identity key approves it with a credential signed by that key;
 * the new device learns its device id and credential by polling with a secret only it knows, then logs in
 * with its own Ed25519 key (relay/http/login.ts). The relay checks every credential against the chain as
 * strictly as the clients do, keeps each user's devices (bounded by MAX_DEVICES_PER_USER), lists them, and
 * revokes one: every session bound to it ends at once on every instance.
 *
 * Also the session gate of every /v2 route (the Delivery Service's included): the token must still stand
 * (not logged out, not of a revoked device, key and password unchanged), and a device-bound token may act
 * only as its own device.
 */
import { createHash, randomBytes } from "node:crypto";
import express, { Router, type NextFunction, type Request, type Response } from "express";
import { ChatError } from "../../protocol/errors";
import { bytesToHex } from "../../protocol/mls/bytes";
import {
  ApproveDeviceLinkRequest,
  CreateDeviceLinkRequest,
  DEVICE_LINK_LIMITS,
  DeviceLinkSecret,
  deviceFingerprint,
  deviceLinkCodeFromBytes,
  normalizeDeviceLinkCode,
  PutDeviceCredentialRequest,
  RegisterOwnDeviceRequest,
  type DeviceLinkStatusResponse,
  type DeviceView,
} from "../../protocol/wire-devices";
import { decodeBase64, DEVICE_ID_HEADER, DEVICE_ID_PATTERN, DeviceId, encodeBase64 } from "../../protocol/wire-v2";
import { bearerToken, type SessionClaims } from "../sessions";
import { DeviceStoreError, type DeviceRecord, type DeviceStore } from "../storage/devices-types";
import { checkDeviceCredential } from "./device-credential-check";
import { assertCacheFresh, clientAddress, fromStorage, requireSession, type HttpContext } from "./context";
import { parseWith } from "./errors";

/** The device routes' settings, from relay/config.ts. */
export interface DeviceSettings {
  maxDevicesPerUser: number;
  deviceLinkTtlMs: number;
}

/** How often one instance writes a device's last-seen time, at most. */
const LAST_SEEN_EVERY_MS = 60_000;
const LAST_SEEN_MAX_ENTRIES = 10_000;

const hexToBytes = (hex: string) => new Uint8Array(Buffer.from(hex, "hex"));
const sha256 = (bytes: Uint8Array) => new Uint8Array(createHash("sha256").update(bytes).digest());

export function deviceView(device: DeviceRecord): DeviceView {
  return {
    deviceId: device.deviceId,
    name: device.name,
    devicePublicKey: bytesToHex(device.publicKey),
    fingerprint: deviceFingerprint(device.publicKey),
    keyIndex: device.keyIndex,
    linkedAt: device.linkedAt,
    lastSeenAt: device.lastSeenAt,
    revokedAt: device.revokedAt,
  };
}

/** Store refusals as the API's codes, with what the user can do about them. */
function fromDeviceStore(error: unknown, settings: DeviceSettings): never {
  if (error instanceof DeviceStoreError) {
    switch (error.code) {
      case "DEVICES_FULL":
        throw new ChatError(
          "LIMIT_EXCEEDED",
          `device limit reached: ${error.message}, the most this relay allows per user is ${settings.maxDevicesPerUser}; revoke a device first`,
        );
      case "LINKS_FULL":
        throw new ChatError("LIMIT_EXCEEDED", `too many link requests waiting (${error.message}); approve one or let them expire`);
      case "NO_SUCH_LINK":
        throw new ChatError("NOT_FOUND", "no link request with this code is waiting for you (wrong code, expired, or already approved)");
      case "KEY_LINKED":
        throw new ChatError("BAD_REQUEST", `the device key is already linked: ${error.message}`, { field: "devicePublicKey" });
      case "DEVICE_TAKEN":
        throw new ChatError("FORBIDDEN", `device id refused: ${error.message}`, { field: DEVICE_ID_HEADER });
      default:
        break;
    }
  }
  if (error instanceof ChatError) throw error;
  throw new ChatError("STORAGE_UNAVAILABLE", "storage unavailable");
}

async function devicesStore<T>(task: Promise<T>, settings: DeviceSettings): Promise<T> {
  try {
    return await task;
  } catch (error) {
    fromDeviceStore(error, settings);
  }
}

/** The session the gate checked for this request, or a fresh check (a route reached without the gate). */
async function sessionOf(ctx: HttpContext, req: Request, res: Response): Promise<SessionClaims> {
  return (res.locals.session as SessionClaims | undefined) ?? requireSession(ctx, req);
}

/** The device a request acts as: the session's own device, else X-Device-Id; undefined when neither. */
function actingDevice(req: Request, claims: SessionClaims): string | undefined {
  if (claims.dev !== undefined) return claims.dev;
  const header = req.headers[DEVICE_ID_HEADER];
  return typeof header === "string" && DEVICE_ID_PATTERN.test(header) ? header : undefined;
}

/** Routes open without a session: the new device has none yet. */
function isOpenRoute(req: Request): boolean {
  return (req.method === "POST" && req.path === "/v2/device-links") || (req.method === "GET" && req.path === "/v2/device-links/status");
}

export function deviceRoutes(
  ctx: HttpContext,
  store: DeviceStore,
  settings: DeviceSettings,
  /** forgets a revoked device's key packages (the Delivery Service's), so that nobody claims one for it */
  forgetKeyPackages?: (device: { username: string; deviceId: string }) => Promise<void>,
): Router {
  const router = Router();

  // Last-seen writes, at most one per device per LAST_SEEN_EVERY_MS on this instance.
  const lastTouched = new Map<string, number>();
  function seen(username: string, deviceId: string): void {
    const key = `${username}:${deviceId}`;
    const now = ctx.clock();
    if (now - (lastTouched.get(key) ?? -Infinity) < LAST_SEEN_EVERY_MS) return;
    if (lastTouched.size >= LAST_SEEN_MAX_ENTRIES) lastTouched.clear();
    lastTouched.set(key, now);
    store.touch(username, deviceId, now).catch(() => lastTouched.delete(key));
  }

  /** The /v2 session gate (see the file's comment). Requests without a token go on: each route refuses them itself. */
  async function gate(req: Request, res: Response, next: NextFunction): Promise<void> {
    if (isOpenRoute(req) || bearerToken(req.headers.authorization) === undefined) return next();
    const claims = await requireSession(ctx, req);
    const header = req.headers[DEVICE_ID_HEADER];
    if (claims.dev !== undefined && header !== undefined && header !== claims.dev) {
      throw new ChatError("FORBIDDEN", `this session belongs to device ${claims.dev}; X-Device-Id must name it`, { field: DEVICE_ID_HEADER });
    }
    res.locals.session = claims;
    const deviceId = actingDevice(req, claims);
    if (deviceId !== undefined) seen(claims.sub, deviceId);
    next();
  }
  router.use("/v2", gate);
  // Small bodies: parsed here (16 kB), so the Delivery Service's larger parser does not apply to these routes.
  router.use(["/v2/device-links", "/v2/devices"], express.json({ limit: "16kb" }));

  const limitLinkRequests = (req: Request, username: string) =>
    ctx.limits.limiter.hit([
      { key: `device-link:user:${username}`, limit: ctx.settings.loginRateLimit.perUser },
      { key: `device-link:addr:${clientAddress(req)}`, limit: ctx.settings.loginRateLimit.perAddress },
    ]);
  /** Code lookups and approvals per user: a wrong code costs one of them. */
  const limitCodeLookups = (username: string) => ctx.limits.limiter.hit([{ key: `device-link-code:user:${username}`, limit: ctx.settings.loginRateLimit.perUser }]);

  async function userExists(username: string): Promise<boolean> {
    const keys = await fromStorage(ctx.cache.getKeys(username));
    if (keys.length > 0) return true;
    return (await ctx.chain.keyCount(username)) > 0;
  }

  router.post("/v2/device-links", async (req, res) => {
    const body = parseWith(CreateDeviceLinkRequest, req.body);
    await limitLinkRequests(req, body.username);
    assertCacheFresh(ctx);
    // Whether a name is registered is public on chain: saying so tells nobody anything new.
    if (!(await userExists(body.username))) throw new ChatError("UNKNOWN_USER", `no user named ${body.username}`);
    const linkSecret = randomBytes(32).toString("hex");
    const now = ctx.clock();
    const expiresAt = now + settings.deviceLinkTtlMs;
    for (let attempt = 1; ; attempt++) {
      const code = deviceLinkCodeFromBytes(new Uint8Array(randomBytes(5)));
      try {
        await store.createLink({
          link: {
            code,
            secretHash: sha256(hexToBytes(linkSecret)),
            username: body.username,
            publicKey: hexToBytes(body.devicePublicKey),
            name: body.deviceName ?? null,
            createdAt: now,
            expiresAt,
            approved: null,
          },
          maxPendingPerUser: DEVICE_LINK_LIMITS.pendingPerUser,
          now,
        });
      } catch (error) {
        // 40 bits: a taken code is rare; a few draws make a failure negligible.
        if (error instanceof DeviceStoreError && error.code === "CODE_TAKEN" && attempt < 3) continue;
        fromDeviceStore(error, settings);
      }
      ctx.logger.info({ username: body.username }, "device link requested");
      res.json({ code, linkSecret, expiresAt });
      return;
    }
  });

  router.get("/v2/device-links/status", async (req, res) => {
    const secret = parseWith(DeviceLinkSecret, req.query.secret, "secret");
    const link = await fromStorage(store.linkBySecretHash(sha256(hexToBytes(secret)), ctx.clock()));
    let answer: DeviceLinkStatusResponse;
    if (!link) answer = { status: "expired" };
    else if (link.approved) {
      answer = { status: "approved", deviceId: link.approved.deviceId, keyIndex: link.approved.keyIndex, credential: encodeBase64(link.approved.credential) };
    } else answer = { status: "pending", expiresAt: link.expiresAt };
    res.json(answer);
  });

  /** The caller's own pending request with this code, or NOT_FOUND (another user's code is not found either). */
  async function waitingLink(req: Request, claims: SessionClaims) {
    await limitCodeLookups(claims.sub);
    const code = normalizeDeviceLinkCode(String(req.params.code));
    const link = code === null ? null : await fromStorage(store.linkByCode(code, ctx.clock()));
    if (!link || link.username !== claims.sub || link.approved !== null) fromDeviceStore(new DeviceStoreError("NO_SUCH_LINK", ""), settings);
    return link;
  }

  router.get("/v2/device-links/:code", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const link = await waitingLink(req, claims);
    res.json({
      code: link.code,
      username: link.username,
      devicePublicKey: bytesToHex(link.publicKey),
      fingerprint: deviceFingerprint(link.publicKey),
      deviceName: link.name,
      createdAt: link.createdAt,
      expiresAt: link.expiresAt,
    });
  });

  router.post("/v2/device-links/:code/approve", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const body = parseWith(ApproveDeviceLinkRequest, req.body);
    const link = await waitingLink(req, claims);
    assertCacheFresh(ctx);
    const credential = decodeBase64(body.credential);
    const identity = await checkDeviceCredential(ctx, { username: claims.sub, devicePublicKey: link.publicKey, identityBytes: credential });
    const now = ctx.clock();
    const device = await devicesStore(
      store.approveLink({
        code: link.code,
        device: {
          username: claims.sub,
          deviceId: randomBytes(8).toString("hex"),
          publicKey: link.publicKey,
          keyIndex: identity.keyIndex,
          credential,
          name: link.name,
          linkedAt: now,
          lastSeenAt: null,
          revokedAt: null,
        },
        maxDevices: settings.maxDevicesPerUser,
        now,
        answerUntil: now + settings.deviceLinkTtlMs,
      }),
      settings,
    );
    ctx.logger.info({ username: claims.sub, deviceId: device.deviceId, keyIndex: device.keyIndex }, "device linked");
    res.json(deviceView(device));
  });

  router.get("/v2/devices", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const devices = await fromStorage(store.devices(claims.sub));
    res.json({ devices: devices.map(deviceView), maxDevices: settings.maxDevicesPerUser });
  });

  /** The device that holds the identity key registers its own MLS key, so that it is listed and counted. */
  router.post("/v2/devices/self", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const body = parseWith(RegisterOwnDeviceRequest, req.body);
    const deviceId = actingDevice(req, claims);
    if (deviceId === undefined) throw new ChatError("BAD_REQUEST", "X-Device-Id must name this device", { field: DEVICE_ID_HEADER });
    assertCacheFresh(ctx);
    const publicKey = hexToBytes(body.devicePublicKey);
    const credential = decodeBase64(body.credential);
    const identity = await checkDeviceCredential(ctx, { username: claims.sub, devicePublicKey: publicKey, identityBytes: credential });
    const now = ctx.clock();
    const device = await devicesStore(
      store.registerDevice({
        device: {
          username: claims.sub,
          deviceId,
          publicKey,
          keyIndex: identity.keyIndex,
          credential,
          name: body.deviceName ?? null,
          linkedAt: now,
          lastSeenAt: now,
          revokedAt: null,
        },
        maxDevices: settings.maxDevicesPerUser,
      }),
      settings,
    );
    res.json(deviceView(device));
  });

  router.get("/v2/devices/self/credential", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const deviceId = actingDevice(req, claims);
    if (deviceId === undefined) throw new ChatError("BAD_REQUEST", "X-Device-Id must name this device", { field: DEVICE_ID_HEADER });
    const device = await fromStorage(store.device(claims.sub, deviceId));
    if (!device) throw new ChatError("NOT_FOUND", `no device ${deviceId} is registered for ${claims.sub}`);
    if (device.revokedAt !== null) throw new ChatError("SESSION_REVOKED", "this device was revoked by its user");
    res.json({ deviceId, keyIndex: device.keyIndex, credential: encodeBase64(device.credential) });
  });

  /** A newer credential for a kept device, uploaded by the device that re-authorised it after a rotation. */
  router.post("/v2/devices/:deviceId/credential", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    const deviceId = parseWith(DeviceId, req.params.deviceId, "deviceId");
    const body = parseWith(PutDeviceCredentialRequest, req.body);
    const device = await fromStorage(store.device(claims.sub, deviceId));
    if (!device) throw new ChatError("NOT_FOUND", `no device ${deviceId} is registered for ${claims.sub}`);
    if (device.revokedAt !== null) throw new ChatError("FORBIDDEN", `device ${deviceId} was revoked; link it again instead`);
    assertCacheFresh(ctx);
    const credential = decodeBase64(body.credential);
    const identity = await checkDeviceCredential(ctx, { username: claims.sub, devicePublicKey: device.publicKey, identityBytes: credential });
    if (identity.keyIndex < device.keyIndex) {
      throw new ChatError("BAD_REQUEST", `the credential is signed by key ${identity.keyIndex}, older than the device's (key ${device.keyIndex})`, {
        field: "credential",
      });
    }
    const updated = await fromStorage(store.updateCredential({ username: claims.sub, deviceId, keyIndex: identity.keyIndex, credential }));
    if (!updated) throw new ChatError("NOT_FOUND", `device ${deviceId} changed meanwhile; list the devices again`);
    res.json({ deviceId, keyIndex: identity.keyIndex, credential: body.credential });
  });

  /**
   * Revoking needs a session of the identity key (not a device login): a stolen linked device must not be
   * able to cut off the others. The client then rotates the identity key and re-authorises the kept devices.
   */
  router.post("/v2/devices/:deviceId/revoke", async (req, res) => {
    const claims = await sessionOf(ctx, req, res);
    if (claims.dev !== undefined) throw new ChatError("FORBIDDEN", "revoking a device needs a session of the identity key, not a device login");
    const deviceId = parseWith(DeviceId, req.params.deviceId, "deviceId");
    const now = ctx.clock();
    const device = await fromStorage(store.revokeDevice({ username: claims.sub, deviceId, now }));
    if (!device) throw new ChatError("NOT_FOUND", `no device ${deviceId} is registered for ${claims.sub}`);
    await fromStorage(ctx.sessions.revokeDevice({ username: claims.sub, deviceId, sessionTtlMs: ctx.settings.sessionTtlMs }));
    // Revoking again (after a storage failure here, say) forgets them again.
    if (forgetKeyPackages) await fromStorage(forgetKeyPackages({ username: claims.sub, deviceId }));
    ctx.logger.info({ username: claims.sub, deviceId }, "device revoked");
    res.json({ deviceId, revokedAt: device.revokedAt ?? now });
  });

  return router;
}
