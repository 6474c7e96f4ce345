/**
 * chat group create | add | remove | leave | rename | list | show: named groups on MLS. Every command first
 * syncs this device (joins waiting welcomes, catches up every group with news, shows what arrived), so it
 * acts on the current epoch and on the members as they are now. Membership is read from this device's own
 * tree, never from the relay; every user added is checked on chain first, and key changes are announced.
 */
import { ChatError } from "../../protocol/errors";
import { MAX_GROUP_NAME_BYTES } from "../../protocol/mls";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { Messenger, type MessengerDeps } from "../messaging";
import { MlsChat, openChatCommand, type MlsChatDeps } from "../mls/chat";
import type { MemberInfo } from "../../client-core/mls-device";
import { inertLine } from "../output";
import type { OwnAccountDeps } from "../own-account";
import { fetchVerifiedKeys, type VerifiedKey } from "../trust";
import { printGroupEvent, printMlsMessage } from "../mls/print";

export type GroupDeps = MlsChatDeps & MessengerDeps & OwnAccountDeps & Pick<Context, "options" | "sessions">;

/** Control characters and bidirectional overrides: a name shown to every member must print as typed. */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/;

/** A group name as typed: 1 to MAX_GROUP_NAME_BYTES bytes of UTF-8, printable, not only spaces. */
export function parseGroupName(raw: string): string {
  const name = typeof raw === "string" ? raw.trim() : "";
  if (name.length === 0) throw new ChatError("USAGE", "a group name cannot be empty");
  const bytes = Buffer.byteLength(name, "utf8");
  if (bytes > MAX_GROUP_NAME_BYTES) throw new ChatError("USAGE", `group name too long: ${bytes} bytes, at most ${MAX_GROUP_NAME_BYTES}`);
  if (UNPRINTABLE.test(name)) throw new ChatError("USAGE", `a group name cannot hold control characters: ${inertLine(name)}`);
  return name;
}

/** USERS as typed (one list or several arguments, comma-separated or not): valid usernames, each once. */
export function parseUserList(raw: string[]): string[] {
  return [...new Set(raw.flatMap((part) => part.split(",")).map((u) => u.trim()).filter((u) => u.length > 0).map(parseUsername))];
}

interface GroupSession {
  chat: MlsChat;
  messenger: Messenger;
  me: string;
}

/** Checks the session and this user's own key, opens the device and syncs it, printing what arrived. */
async function openGroups(ctx: GroupDeps): Promise<GroupSession> {
  const { session, messenger, chat } = await openChatCommand(ctx);
  const events = await ctx.out.progress("catching up", chat.sync());
  for (const message of chat.take()) printMlsMessage(ctx.out, chat, message);
  for (const event of events) printGroupEvent(ctx.out, chat, event);
  return { chat, messenger, me: session.username };
}

/**
 * Each user must be on chain: their key history is read and checked, and a rotation or reset since it was
 * pinned is announced before they are added.
 */
async function checkUsers(messenger: Messenger, usernames: string[]): Promise<void> {
  for (const username of usernames) {
    await messenger.recheckPeerKey(username);
    await messenger.book.current(username);
  }
}

/** A claim found no key package: name the user, since the relay's NOT_FOUND does not. */
async function claiming<T>(usernames: string[], work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof ChatError && error.code === "NOT_FOUND" && usernames.length > 0) {
      throw new ChatError(
        "NOT_FOUND",
        `${usernames.map(inertLine).join(", ")}: at least one has no device that can join groups yet (they have not logged in with a current chat); nothing was changed for them`,
      );
    }
    throw error;
  }
}

const list = (names: string[]) => names.map(inertLine).join(", ");

/** chat group create NAME [--with USER,...] (`withUsers`: the menu's answer in place of --with) */
export async function create(ctx: GroupDeps, rawName: string, withUsers = ctx.options.with): Promise<void> {
  const name = parseGroupName(rawName);
  const users = parseUserList(withUsers ? [withUsers] : []);
  const { chat, messenger, me } = await openGroups(ctx);
  if (users.includes(me)) throw new ChatError("USAGE", "you are in every group you create: leave yourself out of --with");
  if (chat.device.groups().some((g) => !g.removed && !g.left && g.peer === undefined && g.name === name)) {
    throw new ChatError("USAGE", `you are already in a group called ${inertLine(name)}: choose another name`);
  }
  await checkUsers(messenger, users);
  const groupId = await ctx.out.progress("creating the group", claiming(users, chat.device.createGroup(users, name)));
  const members = chat.device.usernames(groupId);
  ctx.out.data(
    { type: "group-created", groupId, name, members, epoch: chat.device.epoch(groupId) },
    `Created #${inertLine(name)} (id ${groupId.slice(0, 8)}): ${list(members)}`,
  );
}

/** chat group add NAME USER... */
export async function add(ctx: GroupDeps, rawName: string, ...rawUsers: string[]): Promise<void> {
  const users = parseUserList(rawUsers);
  if (users.length === 0) throw new ChatError("USAGE", "usage: chat group add NAME USER...");
  const { chat, messenger, me } = await openGroups(ctx);
  const groupId = chat.resolveGroup(rawName);
  if (users.includes(me)) throw new ChatError("USAGE", `you are already in ${chat.label(groupId)}`);
  const present = new Set(chat.device.usernames(groupId));
  const already = users.filter((u) => present.has(u));
  if (already.length > 0) throw new ChatError("BAD_REQUEST", `already in ${chat.label(groupId)}: ${list(already)}`);
  await checkUsers(messenger, users);
  await ctx.out.progress("adding", claiming(users, chat.device.add(groupId, users)));
  ctx.out.data(
    { type: "group-added", groupId, added: users, members: chat.device.usernames(groupId), epoch: chat.device.epoch(groupId) },
    `Added ${list(users)} to ${chat.label(groupId)} (epoch ${chat.device.epoch(groupId)})`,
  );
}

/** chat group remove NAME USER... */
export async function remove(ctx: GroupDeps, rawName: string, ...rawUsers: string[]): Promise<void> {
  const users = parseUserList(rawUsers);
  if (users.length === 0) throw new ChatError("USAGE", "usage: chat group remove NAME USER...");
  const { chat, me } = await openGroups(ctx);
  const groupId = chat.resolveGroup(rawName);
  if (users.includes(me)) throw new ChatError("USAGE", `to leave ${chat.label(groupId)} yourself, use chat group leave`);
  const present = new Set(chat.device.usernames(groupId));
  const absent = users.filter((u) => !present.has(u));
  if (absent.length > 0) throw new ChatError("NOT_FOUND", `not in ${chat.label(groupId)}: ${list(absent)}`);
  await ctx.out.progress("removing", chat.device.remove(groupId, users));
  ctx.out.data(
    { type: "group-removed", groupId, removed: users, members: chat.device.usernames(groupId), epoch: chat.device.epoch(groupId) },
    `Removed ${list(users)} from ${chat.label(groupId)} (epoch ${chat.device.epoch(groupId)})`,
  );
}

/** chat group leave NAME */
export async function leave(ctx: GroupDeps, rawName: string): Promise<void> {
  const { chat } = await openGroups(ctx);
  const groupId = chat.resolveGroup(rawName);
  const label = chat.label(groupId);
  await ctx.out.progress("leaving", chat.device.leave(groupId));
  ctx.out.data(
    { type: "group-left", groupId },
    `You left ${label}: this device reads and sends nothing more there; the next member to sync removes it from the group`,
  );
}

/** chat group rename NAME NEW */
export async function rename(ctx: GroupDeps, rawName: string, rawNew: string): Promise<void> {
  const name = parseGroupName(rawNew);
  const { chat } = await openGroups(ctx);
  const groupId = chat.resolveGroup(rawName);
  const before = chat.label(groupId);
  if (chat.device.groups().some((g) => g.groupId !== groupId && !g.removed && !g.left && g.peer === undefined && g.name === name)) {
    throw new ChatError("USAGE", `you are already in a group called ${inertLine(name)}: choose another name`);
  }
  await ctx.out.progress("renaming", chat.device.rename(groupId, name));
  ctx.out.data({ type: "group-renamed", groupId, name }, `Renamed ${before} to ${chat.label(groupId)}`);
}

/** chat group list: this device's groups (not one-to-one chats), with member count and epoch, or why it is out. */
export async function listGroups(ctx: GroupDeps): Promise<void> {
  const { chat } = await openGroups(ctx);
  const groups = chat.device.groups().filter((g) => g.peer === undefined);
  if (groups.length === 0) {
    ctx.out.info("No groups yet: chat group create NAME --with USER,...");
    return;
  }
  for (const g of groups) {
    const status = g.removed ? "removed" : g.left ? "left" : "member";
    const name = g.name ?? null;
    const shown = `${chat.label(g.groupId).padEnd(20)} ${g.groupId.slice(0, 8)}`;
    if (status !== "member") {
      ctx.out.data({ type: "group", groupId: g.groupId, name, status }, `${shown}  ${status === "left" ? "left" : "removed from it"}`);
      continue;
    }
    const members = chat.device.usernames(g.groupId);
    const epoch = chat.device.epoch(g.groupId);
    ctx.out.data(
      { type: "group", groupId: g.groupId, name, status, members: members.length, epoch },
      `${shown}  ${members.length} member${members.length === 1 ? "" : "s"}  epoch ${epoch}`,
    );
  }
}

/**
 * chat group show NAME: the members in this device's tree, each with the fingerprint of the on-chain identity
 * key that authorised the device (as chat whois shows it) and the device's own key fingerprint.
 */
export async function show(ctx: GroupDeps, rawName: string): Promise<void> {
  const { chat, messenger, me } = await openGroups(ctx);
  const groupId = chat.resolveGroup(rawName);
  const members = await chat.device.members(groupId);
  const epoch = chat.device.epoch(groupId);
  const histories = new Map<string, VerifiedKey[]>();
  for (const username of new Set(members.map((m) => m.username))) {
    // Our own history is read without pinning it as a contact; a peer's goes through the key book (announced, pinned).
    histories.set(username, username === me ? await fetchVerifiedKeys(ctx, me) : await messenger.book.keys(username));
  }
  const rows = members
    .sort((a, b) => a.username.localeCompare(b.username) || a.leafIndex - b.leafIndex)
    .map((m) => describeMember(ctx, me, m, histories.get(m.username)!));
  if (ctx.out.json) {
    ctx.out.data({ type: "group-show", groupId, name: chat.device.groups().find((g) => g.groupId === groupId)?.name ?? null, epoch, members: rows }, "");
    return;
  }
  const lines = [`${chat.label(groupId)}  id ${groupId}  epoch ${epoch}  ${rows.length} device${rows.length === 1 ? "" : "s"}`];
  for (const row of rows) {
    const notes = [row.you ? "you" : "", row.verified ? "verified" : "", row.keyCurrent ? "" : "key replaced since"].filter(Boolean);
    lines.push(`  ${inertLine(row.username).padEnd(20)} key #${row.keyIndex} ${row.keyFingerprint ?? "(not on chain)"}  device ${row.deviceFingerprint}${notes.length ? `  (${notes.join(", ")})` : ""}`);
  }
  lines.push(`Compare key fingerprints with chat whois USER; the device fingerprint tells a member's devices apart.`);
  ctx.out.data({}, lines.join("\n"));
}

function describeMember(ctx: Pick<Context, "contacts">, me: string, m: MemberInfo, keys: VerifiedKey[]) {
  const key = keys.find((k) => k.index === m.keyIndex);
  const verified = m.username !== me && key !== undefined && ctx.contacts.get(me, m.username)?.verified?.publicKey === key.publicKey;
  return {
    username: m.username,
    you: m.username === me,
    keyIndex: m.keyIndex,
    keyFingerprint: key?.fingerprint ?? null,
    identityAddress: m.identityAddress ?? null,
    keyCurrent: key !== undefined && key.index === keys[keys.length - 1].index,
    verified,
    deviceFingerprint: m.deviceFingerprint,
  };
}
