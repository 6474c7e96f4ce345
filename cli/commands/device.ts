/**
 * chat device link | approve | list | revoke: several devices per user. Each device is its own MLS member
 * with its own Ed25519 key; a device that holds the identity key authorises another by signing a credential
 * for that device's key (protocol/mls/authorize-device.ts). A linked device never holds the identity key:
 * it logs in with its own key (POST /v1/login/device), and its MLS state opens with a random device secret
 * kept encrypted under the user's password in its home.
 */
import { randomBytes } from "node:crypto";
import { Wallet } from "ethers";
import { ChatError } from "../../protocol/errors";
import { authorizeDevice, generateDeviceSignatureKey } from "../../protocol/mls";
import {
  CreateDeviceLinkResponse,
  DeviceLinkStatusResponse,
  DeviceName,
  deviceFingerprint,
  normalizeDeviceLinkCode,
  type DeviceView,
} from "../../protocol/wire-devices";
import { decodeBase64 } from "../../protocol/wire-v2";
import { loginWithDevice, unlockCurrentKeys } from "../auth";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { askYesNo } from "../input";
import { localTime } from "../messaging";
import { inertLine } from "../output";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { MlsChat, type MlsChatDeps } from "../mls/chat";
import { MlsDevice, type GroupEvent } from "../../client-core/mls-device";
import { DsClient } from "../mls/ds-client";
import { printGroupEvent, printMlsMessage } from "../mls/print";
import { requireSession, type Session } from "../session";
import { reauthorizeMlsDevice, rotateIdentityKey, type RotateDeps } from "./rotate-key";
import { homeDeviceStorage, homeDeviceStore, homeHasDevice } from "../mls/device-files";

export type DeviceDeps = MlsChatDeps & RotateDeps & Pick<Context, "options" | "lines" | "insecureFastKdf" | "sessions">;

/** How often a waiting new device asks whether it was approved. */
const LINK_POLL_MS = 1500;
/** How long an approving device waits for the new one to publish its key packages before leaving it to a later sync. */
const NEW_DEVICE_WAIT_MS = 120_000;
const NEW_DEVICE_POLL_MS = 2000;

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const unhex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A device holding the identity key: the session's own, never a linked device's. */
function identitySession(ctx: DeviceDeps, what: string): Session {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  if (session.linked) throw new ChatError("USAGE", `${what} needs the identity key, which a linked device never holds: run it on the device that registered ${session.username} (or holds its key)`);
  return session;
}

/** Opens this user's device, catches it up (printing what arrived) and returns it. */
async function openSynced(ctx: DeviceDeps, session: Session): Promise<MlsChat> {
  const chat = await MlsChat.open(ctx, session);
  const events = await ctx.out.progress("catching up", chat.sync());
  for (const message of chat.take()) printMlsMessage(ctx.out, chat, message);
  for (const event of events) printGroupEvent(ctx.out, chat, event);
  return chat;
}

/** The device holding the identity key registers its own MLS key at the relay once, so that it is listed and counted. */
async function registerSelf(chat: MlsChat, devices: DeviceView[]): Promise<DeviceView[]> {
  const device = chat.device;
  const ownKey = hex(device.signaturePublicKey);
  if (devices.some((d) => d.devicePublicKey === ownKey)) return devices;
  await device.ds.registerSelf({ devicePublicKey: ownKey, credential: device.credentialIdentity });
  return (await device.ds.devices()).devices;
}

/**
 * chat device link USER [--name NAME]: in a new home, asks the relay to link a new device of USER, shows the
 * code and this device's fingerprint, and waits for a device holding USER's key to approve it; then saves
 * the device, logs in with its own key and publishes its key packages.
 */
export async function link(ctx: DeviceDeps, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  const deployment = await ctx.deployment();
  const registry = await ctx.registry();
  if (!(await registry.isRegistered(username))) throw new ChatError("UNKNOWN_USER", `unknown user ${username}`);
  if (homeHasDevice(ctx.home, username) || ctx.keys.localKeys(username).length > 0) {
    throw new ChatError("BAD_REQUEST", `this home already holds a device of ${username}: run chat login ${username}, or link from another home (--home)`);
  }
  const rawName = ctx.options.name;
  const name = rawName === undefined ? undefined : DeviceName.safeParse(rawName.trim());
  if (name && !name.success) throw new ChatError("USAGE", `a device name is 1 to 64 printable characters: ${inertLine(rawName!)}`);
  const password = await ctx.passwords.password(`Password for ${username} (protects this device's keys here): `);
  const signatureKey = await generateDeviceSignatureKey();
  const fingerprint = deviceFingerprint(signatureKey.publicKey);
  const request = await ctx.relay.post(
    "/v2/device-links",
    { username, devicePublicKey: hex(signatureKey.publicKey), ...(name?.success ? { deviceName: name.data } : {}) },
    CreateDeviceLinkResponse,
  );
  ctx.out.data(
    { type: "device-link", username, code: request.code, fingerprint, expiresAt: request.expiresAt },
    [
      `To link this device, run on a device that holds ${username}'s key:`,
      `  chat device approve ${request.code}`,
      `and check that it shows this device's fingerprint: ${fingerprint}`,
    ].join("\n"),
  );
  const approved = await ctx.out.progress(`waiting for the approval (until ${localTime(request.expiresAt)})`, waitForApproval(ctx, request.linkSecret, request.expiresAt));

  const deviceSecret = new Uint8Array(randomBytes(32));
  const store = homeDeviceStore(ctx.home, username);
  await store.writeDeviceSecret(deviceSecret, password, { fastKdf: ctx.insecureFastKdf });
  let token = "";
  const device = await MlsDevice.createLinked(
    {
      storage: homeDeviceStorage(ctx.home, username),
      username,
      identityKeys: [],
      deviceSecret,
      chainId: deployment.chainId,
      contract: deployment.contractAddress,
      keyBook: chainKeyBook(registry),
      connect: (deviceId) =>
        new DsClient({ url: ctx.relay.origin, token: () => token, deviceId, tls: () => ctx.relay.tls(), connectionError: (error) => ctx.relay.connectionError(error) }),
    },
    { deviceId: approved.deviceId, signatureKey, credential: decodeBase64(approved.credential) },
  );
  const { session, credential } = await loginWithDevice({
    ctx,
    username,
    deviceId: device.deviceId,
    credential: device.credentialIdentity,
    deviceSecret,
    sign: (text) => device.signText(text),
  });
  token = session.token;
  await device.adoptCredential(credential);
  await device.ensureKeyPackages();
  ctx.out.data(
    { type: "device-linked", username, deviceId: device.deviceId, keyIndex: device.keyIndex, fingerprint, expiresAt: session.expiresAt },
    `Linked this device to ${username} (device ${device.deviceId}) and logged in until ${localTime(session.expiresAt)}. It joins your conversations from now on; what was sent before stays on your other devices.`,
  );
}

async function waitForApproval(ctx: DeviceDeps, linkSecret: string, expiresAt: number) {
  for (;;) {
    const status = await ctx.relay.get(`/v2/device-links/status?secret=${linkSecret}`, DeviceLinkStatusResponse);
    if (status.status === "approved") return status;
    if (status.status === "expired" || Date.now() > expiresAt + 5_000) {
      throw new ChatError("CANCELLED", "the link request expired before a device holding the key approved it: run chat device link again");
    }
    await sleep(LINK_POLL_MS);
  }
}

/**
 * chat device approve CODE: on a device holding the identity key (asks the password), shows the new device's
 * fingerprint and name and asks to confirm (unless --yes), signs its credential with the current key and
 * approves it; then adds it to every group of this device once it has published its key packages.
 */
export async function approve(ctx: DeviceDeps, rawCode: string): Promise<void> {
  const code = normalizeDeviceLinkCode(rawCode);
  if (!code) throw new ChatError("USAGE", `not a link code: ${inertLine(rawCode)} (8 characters, as chat device link shows it)`);
  const session = identitySession(ctx, "approving a device");
  const username = session.username;
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const [current] = await unlockCurrentKeys(ctx, username, password);
  const deployment = await ctx.deployment();
  const chat = await openSynced(ctx, session);
  const device = chat.device;
  await registerSelf(chat, (await device.ds.devices()).devices);
  const view = await device.ds.deviceLink(code);
  const label = view.deviceName ? `"${inertLine(view.deviceName)}"` : "(no name)";
  if (!ctx.options.yes) {
    ctx.out.info(`New device ${label} asks to join ${username}. Its fingerprint:\n  ${view.fingerprint}\nCompare it with the one the new device shows.`, { always: true });
    const yes = await askYesNo("Does it match? Approve this device? [y/N] ", { lines: ctx.lines, passwordStdin: Boolean(ctx.options.passwordStdin) });
    if (!yes) throw new ChatError("CANCELLED", "not approved: the new device stays unlinked");
  }
  const credential = await authorizeDevice({
    username,
    keyIndex: current.index,
    chainId: deployment.chainId,
    contract: deployment.contractAddress,
    devicePublicKey: unhex(view.devicePublicKey),
    sign: (text) => new Wallet(current.privateKey).signMessage(text),
  });
  const approved = await device.ds.approveDeviceLink(code, credential.identity);
  ctx.out.data(
    { type: "device-approved", username, deviceId: approved.deviceId, name: approved.name, fingerprint: approved.fingerprint, keyIndex: approved.keyIndex },
    `Approved device ${approved.deviceId} ${label} (${approved.fingerprint}), authorised by key #${approved.keyIndex}.`,
  );
  const missing = device.groupsWithout(approved.devicePublicKey);
  if (missing === 0) return;
  ctx.out.info(`Adding it to your ${missing} conversation(s) once it is ready; it can read only what is sent from then on.`);
  const added = await ctx.out.progress("waiting for the new device", addNewDevice(chat, approved.deviceId, approved.devicePublicKey));
  for (const event of added) printGroupEvent(ctx.out, chat, event);
  const left = device.groupsWithout(approved.devicePublicKey);
  if (left > 0) ctx.out.info(`The new device is not in ${left} conversation(s) yet; the next sync of any of your devices (chat inbox) adds it.`);
}

/**
 * Waits for the new device to log in (the relay's last-seen time; it publishes its key packages right
 * after), then adds it to every group, retrying briefly for packages not there yet.
 */
async function addNewDevice(chat: MlsChat, deviceId: string, devicePublicKey: string): Promise<GroupEvent[]> {
  const device = chat.device;
  const events: GroupEvent[] = [];
  const until = Date.now() + NEW_DEVICE_WAIT_MS;
  while (Date.now() < until) {
    const { devices } = await device.ds.devices();
    const listed = devices.find((d) => d.deviceId === deviceId);
    if (!listed || listed.revokedAt !== null) break;
    if (listed.lastSeenAt !== null) {
      events.push(...(await device.followOwnDevices(devices)));
      if (device.groupsWithout(devicePublicKey) === 0) break;
    }
    await sleep(NEW_DEVICE_POLL_MS);
  }
  return events;
}

/** chat device list: this user's devices as the relay lists them (revoked ones too), marking this one. */
export async function list(ctx: DeviceDeps): Promise<void> {
  const session = requireSession(ctx.sessions, ctx.relay.origin);
  const chat = await MlsChat.open(ctx, session);
  let { devices, maxDevices } = await chat.device.ds.devices();
  if (!session.linked) devices = await registerSelf(chat, devices);
  const ownKey = hex(chat.device.signaturePublicKey);
  const active = devices.filter((d) => d.revokedAt === null).length;
  if (ctx.out.json) {
    ctx.out.data({ type: "devices", username: session.username, maxDevices, devices: devices.map((d) => ({ ...d, thisDevice: d.devicePublicKey === ownKey })) }, "");
    return;
  }
  const lines = [`${session.username}: ${active} of at most ${maxDevices} devices`];
  for (const d of devices) {
    const notes = [d.devicePublicKey === ownKey ? "this device" : "", d.revokedAt !== null ? `revoked ${localTime(d.revokedAt)}` : ""].filter(Boolean);
    lines.push(
      `  ${d.deviceId}  ${(d.name ? inertLine(d.name) : "-").padEnd(16)}  ${d.fingerprint}  key #${d.keyIndex}  linked ${localTime(d.linkedAt)}  last seen ${d.lastSeenAt === null ? "never" : localTime(d.lastSeenAt)}${notes.length ? `  (${notes.join(", ")})` : ""}`,
    );
  }
  ctx.out.data({}, lines.join("\n"));
}

/**
 * chat device revoke ID: the relay revokes the device (its sessions end at once); it is removed from every
 * group (a commit per group, before the key changes, so it learns no later epoch); the identity key is
 * rotated on chain, so the revoked device's credential dies with the old key; the kept devices receive
 * credentials signed by the new key; and this device re-authorises its leaf in every group.
 */
export async function revoke(ctx: DeviceDeps, rawDeviceId: string): Promise<void> {
  const session = identitySession(ctx, "revoking a device");
  const username = session.username;
  const password = await ctx.passwords.password(`Password for ${username}: `);
  await unlockCurrentKeys(ctx, username, password);
  const started = Date.now();
  const chat = await openSynced(ctx, session);
  const device = chat.device;
  const devices = await registerSelf(chat, (await device.ds.devices()).devices);
  const target = devices.find((d) => d.deviceId === rawDeviceId);
  if (!target) throw new ChatError("NOT_FOUND", `${username} has no device ${inertLine(rawDeviceId)}: chat device list shows them`);
  if (target.devicePublicKey === hex(device.signaturePublicKey)) throw new ChatError("BAD_REQUEST", "this is the device you are using: revoke it from another device, or log out");
  await device.ds.revokeDevice(target.deviceId);
  ctx.out.info(`Revoked device ${target.deviceId} at the relay: its sessions have ended.`);

  const after = (await device.ds.devices()).devices;
  const removal = await ctx.out.progress("removing it from your conversations", device.followOwnDevices(after));
  const removedIn = removal.filter((e) => e.kind === "own-devices").length;
  for (const event of removal) if (event.kind === "key-change-failed") printGroupEvent(ctx.out, chat, event);

  const rotated = await rotateIdentityKey(ctx, username, password);
  const deployment = await ctx.deployment();
  const newKey = rotated.session.keys[0];
  const fresh = new DsClient({ url: ctx.relay.origin, token: rotated.session.token, deviceId: device.deviceId, tls: () => ctx.relay.tls(), connectionError: (e) => ctx.relay.connectionError(e) });
  let credentials = 0;
  for (const kept of after.filter((d) => d.revokedAt === null && d.deviceId !== target.deviceId)) {
    const credential = await authorizeDevice({
      username,
      keyIndex: newKey.index,
      chainId: deployment.chainId,
      contract: deployment.contractAddress,
      devicePublicKey: unhex(kept.devicePublicKey),
      sign: (text) => new Wallet(newKey.privateKey).signMessage(text),
    });
    await fresh.putDeviceCredential(kept.deviceId, credential.identity);
    credentials++;
  }
  const reauthorizedIn = await reauthorizeMlsDevice(ctx, rotated.session);
  const ms = Date.now() - started;
  ctx.out.data(
    {
      type: "device-revoked",
      username,
      deviceId: target.deviceId,
      keyIndex: rotated.keyIndex,
      transactions: 1,
      commits: removedIn + reauthorizedIn,
      removedFromGroups: removedIn,
      credentialsRenewed: credentials,
      ms,
    },
    `Device ${target.deviceId} is revoked: removed from ${removedIn} conversation(s), ${username}'s key rotated to key #${rotated.keyIndex}, ${credentials} kept device(s) re-authorised (they update at their next command).`,
  );
}
