/**
 * The browser's messaging engine, over client-core's MLS device (RFC 9420) as `chat` runs it: conversations
 * (one-to-one chats are two-member groups), their history sealed under the device's state key in IndexedDB,
 * an outbox whose texts are sealed only when they go out (a retry keeps its payload id, so it is stored and
 * shown once), delivery states from the other members' cursors, live notices over the relay's WebSocket with
 * a poll behind them, and the key changes of peers read from the user's own chain, never from the relay.
 */
import { chainKeyBook } from "../../client-core/chain-key-book";
import { describeGroupEvent } from "../../client-core/describe-event";
import { DeliveryServiceClient, type HttpExchange } from "../../client-core/ds-client";
import { MlsDevice, type GroupEvent, type MlsDeviceOptions, type ReceivedMessage } from "../../client-core/mls-device";
import { SocketAppends } from "../../client-core/socket-appends";
import { bytesEqual, utf8Bytes, utf8Length, utf8Text } from "../../protocol/bytes";
import { ChatError, isChatError } from "../../protocol/errors";
import { publicKeyOf, publicKeyToAddress } from "../../protocol/keys";
import { MAX_BODY_BYTES, newPayloadId } from "../../protocol/mls";
import { formatSafetyNumber, safetyNumber } from "../../protocol/safety-number";
import { assertUsername } from "../../protocol/username";
import { EarlyFrame, KeysResponse, WS_EARLY_PARAM, WS_PATH, wsAuthSubprotocols } from "../../protocol/wire";
import type { AccountHooks, LinkedDeviceParts, Session } from "./account";
import { openDeviceStorage, type BrowserDeviceStorage } from "./device-storage";
import type { ConversationSummary, DeliveryState, Messenger, TimelineItem } from "./messenger-types";

/** How often the engine catches up without a notice (a notice lost with a dropped socket is made up here). */
const POLL_MS = 4_000;
/** How often each peer's key history is read from the chain again. */
const KEY_CHECK_MS = 30_000;
/** Items kept per conversation: older ones are dropped, so the store cannot grow without bound. */
const MAX_TIMELINE_ITEMS = 2_000;
/** Items per sealed history page: a change reseals and rewrites the pages it touched, not the conversation. */
const HISTORY_PAGE_ITEMS = 100;
const REQUEST_TIMEOUT_MS = 30_000;
const MAX_RECONNECT_MS = 30_000;
/** Refusals that no retry cures: the text is marked failed and leaves the outbox. */
const PERMANENT = new Set(["UNKNOWN_USER", "NOT_FOUND", "KEY_UNVERIFIED", "KEY_MISMATCH", "NOT_GROUP_MEMBER", "UNKNOWN_GROUP", "MESSAGE_TOO_LONG", "BAD_REQUEST", "INVALID_USERNAME"]);

type StoredItem = TimelineItem & { seq?: number };
interface OutboxEntry {
  id: string;
  groupId: string;
  body: string;
  sentAt: number;
}
interface PinnedKey {
  index: number;
  address: string;
  verified: boolean;
  /** the effective time of a pending reset already announced */
  announcedReset?: number;
}
interface Records {
  outbox: OutboxEntry[];
  pins: Record<string, PinnedKey>;
  unread: Record<string, number>;
}

/** Requests through fetch, each after the device's writes are in IndexedDB. */
function fetchExchange(before: () => Promise<void>): HttpExchange {
  return async (request) => {
    await before();
    let response: Response;
    try {
      response = await fetch(request.url, {
        method: request.method,
        headers: request.headers,
        body: request.body,
        credentials: "omit",
        cache: "no-store",
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      throw new ChatError("RELAY_UNREACHABLE", `relay unreachable at ${request.url.origin} (${(error as Error).name})`);
    }
    return { status: response.status, text: await response.text() };
  };
}

function describe(error: unknown): string {
  return isChatError(error) ? `${error.code}: ${error.message}` : error instanceof Error ? error.message : String(error);
}

/** Holds this account on this browser for as long as the page runs: two tabs must not share one MLS state. */
async function holdAccount(username: string): Promise<() => void> {
  const locks = (navigator as Navigator & { locks?: LockManager }).locks;
  if (!locks) return () => undefined;
  let release!: () => void;
  const held = new Promise<void>((resolve) => (release = resolve));
  const got = await new Promise<boolean>((resolve) => {
    void locks.request(`eth-chat-device-${username}`, { ifAvailable: true }, (lock) => {
      resolve(lock !== null);
      return lock ? held : undefined;
    });
  });
  if (!got) throw new ChatError("DEVICE_BUSY", `${username} is open in another tab of this browser: use that tab, or close it and reload`);
  return release;
}

function deviceOptions(
  session: Pick<Session, "username" | "chainId" | "contract" | "registry" | "identityKeys" | "token" | "relayOrigin"> & { deviceSecret?: Uint8Array },
  storage: BrowserDeviceStorage,
  token: () => string,
  deliver?: MlsDeviceOptions["deliver"],
  socket?: SocketAppends,
): MlsDeviceOptions {
  return {
    storage,
    username: session.username,
    identityKeys: session.identityKeys,
    ...(session.deviceSecret ? { deviceSecret: session.deviceSecret } : {}),
    chainId: session.chainId,
    contract: session.contract,
    keyBook: chainKeyBook(session.registry),
    connect: (deviceId) => new DeliveryServiceClient({ url: session.relayOrigin, token, deviceId, exchange: fetchExchange(() => storage.flushed()), ...(socket ? { socket } : {}) }),
    ...(deliver ? { deliver } : {}),
  };
}

class BrowserMessenger implements Messenger {
  private readonly listeners = new Set<() => void>();
  private queue: Promise<unknown> = Promise.resolve();
  private syncQueued = false;
  private flushQueued: Promise<void> | undefined;
  private closed = false;
  private socket: WebSocket | undefined;
  private reconnectMs = 1_000;
  private timers: ReturnType<typeof setTimeout>[] = [];
  private lastKeyCheck = new Map<string, number>();
  /** each loaded conversation: its items, the number of its oldest page, and each page's JSON as last saved */
  private readonly timelines = new Map<string, { items: StoredItem[]; firstPage: number; saved: Map<number | "meta", string> }>();
  private records: Records;

  constructor(
    /** the session in force (a rotation logs in again) */
    public session: Session,
    private readonly storage: BrowserDeviceStorage,
    private device: MlsDevice,
    private readonly releaseAccount: () => void,
    /** small messages and cursor moves over the notice socket while it is open */
    private readonly appends: SocketAppends,
  ) {
    this.records = this.loadRecord<Records>("records") ?? { outbox: [], pins: {}, unread: {} };
  }

  get me(): string {
    return this.session.username;
  }

  // ---- sealed records ----

  private loadRecord<T>(name: string): T | undefined {
    const sealed = this.storage.records.read<string>(name);
    return sealed === undefined ? undefined : (JSON.parse(utf8Text(this.device.openRecord(name, sealed))) as T);
  }

  private saveRecord(name: string, value: unknown): void {
    this.storage.records.write(name, this.device.sealRecord(name, utf8Bytes(JSON.stringify(value))));
  }

  private saveRecords(): void {
    this.saveRecord("records", this.records);
  }

  private loaded(groupId: string) {
    let timeline = this.timelines.get(groupId);
    if (!timeline) {
      const meta = this.loadRecord<{ firstPage: number; pages: number }>(`history/${groupId}/meta`) ?? { firstPage: 0, pages: 0 };
      timeline = { items: [], firstPage: meta.firstPage, saved: new Map<number | "meta", string>([["meta", JSON.stringify(meta)]]) };
      for (let number = meta.firstPage; number < meta.firstPage + meta.pages; number++) {
        const page = this.loadRecord<StoredItem[]>(`history/${groupId}/${number}`) ?? [];
        timeline.items.push(...page);
        timeline.saved.set(number, JSON.stringify(page));
      }
      this.timelines.set(groupId, timeline);
    }
    return timeline;
  }

  private items(groupId: string): StoredItem[] {
    return this.loaded(groupId).items;
  }

  /** Saves the pages that changed since they were last saved; past the limit, the oldest whole pages go. */
  private saveItems(groupId: string): void {
    const timeline = this.loaded(groupId);
    const { items, saved } = timeline;
    while (items.length > MAX_TIMELINE_ITEMS) {
      items.splice(0, HISTORY_PAGE_ITEMS);
      saved.delete(timeline.firstPage);
      this.storage.records.remove(`history/${groupId}/${timeline.firstPage}`);
      timeline.firstPage++;
    }
    const pages = Math.ceil(items.length / HISTORY_PAGE_ITEMS);
    for (let i = 0; i < pages; i++) {
      const number = timeline.firstPage + i;
      const page = items.slice(i * HISTORY_PAGE_ITEMS, (i + 1) * HISTORY_PAGE_ITEMS);
      const text = JSON.stringify(page);
      if (saved.get(number) === text) continue;
      this.saveRecord(`history/${groupId}/${number}`, page);
      saved.set(number, text);
    }
    const meta = { firstPage: timeline.firstPage, pages };
    const metaText = JSON.stringify(meta);
    if (saved.get("meta") !== metaText) {
      this.saveRecord(`history/${groupId}/meta`, meta);
      saved.set("meta", metaText);
    }
  }

  private addEvent(groupId: string, text: string, level: "info" | "warning" | "alarm", keyChange?: Extract<TimelineItem, { type: "event" }>["keyChange"]): void {
    this.items(groupId).push({ type: "event", id: newPayloadId(), at: Date.now(), text, level, ...(keyChange ? { keyChange } : {}) });
    this.saveItems(groupId);
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch {
        // a view's failure must not stop the engine
      }
    }
  }

  /** One device operation at a time, in order (see device-storage.ts). */
  private run<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.catch(() => undefined);
    return next;
  }

  // ---- what the views read ----

  private label(groupId: string): string {
    const group = this.device.groups().find((g) => g.groupId === groupId);
    if (group?.peer) return group.peer;
    return group?.name !== undefined ? `#${group.name}` : `#${groupId.slice(0, 8)}`;
  }

  conversations(): ConversationSummary[] {
    return this.device
      .groups()
      .filter((g) => !g.left)
      .map((g) => {
        const items = this.items(g.groupId);
        const last = items[items.length - 1];
        return {
          id: g.groupId,
          kind: g.peer ? ("direct" as const) : ("group" as const),
          title: this.label(g.groupId),
          members: this.device.usernames(g.groupId),
          unread: this.records.unread[g.groupId] ?? 0,
          lastActivity: last ? (last.type === "message" ? last.sentAt : last.at) : 0,
        };
      })
      .sort((a, b) => b.lastActivity - a.lastActivity);
  }

  timeline(conversationId: string): TimelineItem[] {
    return this.items(conversationId).map((item) => ({ ...item }));
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  markRead(conversationId: string): void {
    if (!this.records.unread[conversationId]) return;
    this.records.unread[conversationId] = 0;
    this.saveRecords();
    this.notify();
  }

  // ---- conversations ----

  private checkPeer(username: string): string {
    const peer = assertUsername(username.trim());
    if (peer === this.me) throw new ChatError("BAD_REQUEST", "a chat needs another user than yourself");
    return peer;
  }

  async openDirect(peer: string): Promise<string> {
    const name = this.checkPeer(peer);
    const groupId = await this.run(async () => this.device.directGroup(name) ?? (await this.device.startDirect(name)));
    if (this.items(groupId).length === 0) this.addEvent(groupId, `new chat with ${name}`, "info");
    await this.checkKeys([name], true);
    this.notify();
    return groupId;
  }

  async createGroup(name: string, members: string[]): Promise<string> {
    const title = name.trim();
    if (title === "" || utf8Length(title) > 100) throw new ChatError("BAD_REQUEST", "a group name is 1 to 100 bytes");
    const users = [...new Set(members.map((m) => this.checkPeer(m)))];
    const groupId = await this.run(() => this.device.createGroup(users, title));
    this.addEvent(groupId, `you created #${title}${users.length > 0 ? ` with ${users.join(", ")}` : ""}`, "info");
    await this.checkKeys(users, true);
    this.notify();
    return groupId;
  }

  async addMembers(conversationId: string, usernames: string[]): Promise<void> {
    const users = [...new Set(usernames.map((m) => this.checkPeer(m)))];
    if (users.length === 0) throw new ChatError("BAD_REQUEST", "name at least one user to add");
    await this.run(() => this.device.add(conversationId, users));
    this.addEvent(conversationId, `you added ${users.join(", ")}`, "info");
    await this.checkKeys(users, true);
    this.notify();
  }

  async removeMember(conversationId: string, username: string): Promise<void> {
    const user = this.checkPeer(username);
    await this.run(() => this.device.remove(conversationId, [user]));
    this.addEvent(conversationId, `you removed ${user}`, "info");
    this.notify();
  }

  async send(conversationId: string, body: string): Promise<void> {
    if (body.trim() === "") throw new ChatError("BAD_REQUEST", "an empty message is not sent");
    const bytes = utf8Length(body);
    if (bytes > MAX_BODY_BYTES) throw new ChatError("MESSAGE_TOO_LONG", `message too long: ${bytes} bytes, at most ${MAX_BODY_BYTES}`);
    if (!this.device.groups().some((g) => g.groupId === conversationId && !g.left && !g.removed)) throw new ChatError("NOT_GROUP_MEMBER", "you are not in this conversation");
    const entry: OutboxEntry = { id: newPayloadId(), groupId: conversationId, body, sentAt: Date.now() };
    // On record before anything is sent: a reload sends it then, under the same id.
    this.records.outbox.push(entry);
    this.saveRecords();
    this.items(conversationId).push({ type: "message", id: entry.id, from: this.me, fromMe: true, body, sentAt: entry.sentAt, state: "sending" });
    this.saveItems(conversationId);
    this.notify();
    await this.flushSoon();
  }

  /** One outbox flush queued at a time: texts typed while it waits go out with it, each still its own message. */
  private flushSoon(): Promise<void> {
    this.flushQueued ??= this.run(async () => {
      this.flushQueued = undefined;
      await this.flushOutbox();
    });
    return this.flushQueued;
  }

  async verify(username: string): Promise<void> {
    const pin = this.records.pins[username];
    if (!pin) throw new ChatError("NOT_FOUND", `no key of ${username} is pinned yet`);
    pin.verified = true;
    this.saveRecords();
    for (const g of this.device.groups()) {
      const items = this.items(g.groupId);
      let changed = false;
      for (const item of items) {
        if (item.type === "event" && item.keyChange?.username === username && !item.keyChange.verified) {
          item.keyChange = { ...item.keyChange, verified: true };
          changed = true;
        }
      }
      if (changed) {
        this.addEvent(g.groupId, `you marked ${username}'s key ${pin.index} as verified`, "info");
      }
    }
    this.notify();
  }

  // ---- sending ----

  private setState(groupId: string, id: string, state: DeliveryState, seq?: number): void {
    const item = this.items(groupId).find((i) => i.type === "message" && i.id === id);
    if (!item || item.type !== "message") return;
    item.state = state;
    if (seq !== undefined) item.seq = seq;
    this.saveItems(groupId);
  }

  private async flushOutbox(): Promise<void> {
    for (const entry of [...this.records.outbox]) {
      try {
        const { seq } = await this.device.send(entry.groupId, entry.body, { id: entry.id, sentAt: entry.sentAt });
        this.setState(entry.groupId, entry.id, "stored", seq);
        this.records.outbox = this.records.outbox.filter((e) => e.id !== entry.id);
        this.saveRecords();
      } catch (error) {
        if (!isChatError(error)) throw error;
        if (!PERMANENT.has(error.code)) break; // the rest waits too, in order
        this.setState(entry.groupId, entry.id, "failed");
        this.addEvent(entry.groupId, `a message was not sent: ${describe(error)}`, "warning");
        this.records.outbox = this.records.outbox.filter((e) => e.id !== entry.id);
        this.saveRecords();
      }
      this.notify();
    }
    await this.updateDeliveryStates();
  }

  /** Texts at or below every other member's cursor are delivered (the relay could lie: it only moves the ✓✓). */
  private async updateDeliveryStates(): Promise<void> {
    for (const g of this.device.groups()) {
      const waiting = this.items(g.groupId).filter((i) => i.type === "message" && i.fromMe && i.state === "stored" && i.seq !== undefined);
      if (waiting.length === 0 || g.removed || g.left) continue;
      const { members } = await this.device.ds.members(g.groupId);
      const others = members.filter((m) => !(m.username === this.me && m.deviceId === this.device.deviceId));
      if (others.length === 0) continue;
      const readUpTo = Math.min(...others.map((m) => m.cursor));
      let changed = false;
      for (const item of waiting) {
        if (item.seq! <= readUpTo && item.type === "message") {
          item.state = "delivered";
          changed = true;
        }
      }
      if (changed) {
        this.saveItems(g.groupId);
        this.notify();
      }
    }
  }

  // ---- receiving ----

  /** Saves received texts before the device's cursor moves past them; a payload id seen before is dropped. */
  deliver(messages: ReceivedMessage[]): void {
    const touched = new Set<string>();
    for (const m of messages) {
      const items = this.items(m.groupId);
      if (items.some((i) => i.type === "message" && i.id === m.id)) continue;
      const fromMe = m.from === this.me;
      items.push({ type: "message", id: m.id, from: m.from, fromMe, body: m.body, sentAt: m.sentAt, seq: m.seq, ...(fromMe ? { state: "stored" as const } : {}) });
      if (!fromMe) this.records.unread[m.groupId] = (this.records.unread[m.groupId] ?? 0) + 1;
      touched.add(m.groupId);
    }
    for (const groupId of touched) this.saveItems(groupId);
    if (touched.size > 0) this.saveRecords();
  }

  private showEvents(events: GroupEvent[]): void {
    for (const event of events) {
      const text = describeGroupEvent(event, { me: this.me, label: (groupId) => this.label(groupId), inert: (name) => name });
      if (text === undefined || event.groupId === "") continue;
      const level = event.kind === "removed" || event.kind === "refused" || event.kind === "key-change-failed" || event.kind === "members-replaced" ? "warning" : "info";
      this.addEvent(event.groupId, text, level);
    }
  }

  /** Catches up everything, sends what waits, and re-reads the peers' keys when due. */
  private async syncOnce(): Promise<void> {
    const { events } = await this.device.sync();
    for (const g of this.device.groups()) if (!g.removed && !g.left && g.peer === undefined) await this.device.honourLeaveRequests(g.groupId);
    this.showEvents(events);
    await this.flushOutbox();
    this.notify();
    const peers = new Set<string>();
    for (const g of this.device.groups()) {
      if (g.left) continue;
      for (const u of this.device.usernames(g.groupId)) if (u !== this.me) peers.add(u);
      // A direct chat's peer stays checked when their last device left it (their key was reset or replaced).
      if (g.peer) peers.add(g.peer);
    }
    await this.checkKeys([...peers], false);
  }

  /** Schedules one catch-up behind whatever runs; notices arriving meanwhile fold into it. */
  scheduleSync(): void {
    if (this.syncQueued || this.closed) return;
    this.syncQueued = true;
    void this.run(async () => {
      this.syncQueued = false;
      await this.syncOnce();
    }).catch((error: unknown) => this.reportBackground(error));
  }

  private lastReported = "";
  private reportBackground(error: unknown): void {
    // A relay that is away is retried by the poll; say so once, not every four seconds.
    const text = describe(error);
    if (text === this.lastReported) return;
    this.lastReported = text;
    console.warn(`messaging: ${text}`);
  }

  // ---- peers' keys, from the chain ----

  /** The public key of `username`'s key `index`: from the relay, accepted only if its address is the chain's. */
  private async publicKeyOf(username: string, index: number, address: string): Promise<string | undefined> {
    try {
      const response = await fetch(new URL(`/v1/users/${encodeURIComponent(username)}/keys`, this.session.relayOrigin), { credentials: "omit", cache: "no-store" });
      const parsed = KeysResponse.safeParse(await response.json());
      const key = parsed.success ? parsed.data.keys.find((k) => k.index === index) : undefined;
      if (!key || publicKeyToAddress(key.publicKey).toLowerCase() !== address.toLowerCase()) return undefined;
      return key.publicKey;
    } catch {
      return undefined;
    }
  }

  private async ownPublicKey(): Promise<string | undefined> {
    const current = this.session.identityKeys[0];
    if (current) return publicKeyOf(current.privateKey);
    const record = await this.session.registry.keyRecord(this.me, this.session.keyIndex);
    return this.publicKeyOf(this.me, this.session.keyIndex, record.address);
  }

  private async safetyNumberWith(username: string, index: number, address: string): Promise<string> {
    const [mine, theirs] = [await this.ownPublicKey(), await this.publicKeyOf(username, index, address)];
    if (!mine || !theirs) return "unavailable (the relay did not hand a key matching the chain)";
    return formatSafetyNumber(safetyNumber({ a: { username: this.me, publicKey: mine }, b: { username, publicKey: theirs } }));
  }

  private conversationsWith(username: string): string[] {
    return this.device
      .groups()
      .filter((g) => !g.left && (g.peer === username || this.device.usernames(g.groupId).includes(username)))
      .map((g) => g.groupId);
  }

  /**
   * Reads each user's key history and pending reset from the chain (`force`, or when KEY_CHECK_MS passed):
   * the first key seen is pinned; a newer one is announced in every conversation with that user, a rotation
   * as a warning, a reset loudly; a reset pending on chain is announced once, as loudly.
   */
  private async checkKeys(usernames: string[], force: boolean): Promise<void> {
    const registry = this.session.registry;
    for (const username of usernames) {
      const now = Date.now();
      if (!force && now - (this.lastKeyCheck.get(username) ?? 0) < KEY_CHECK_MS) continue;
      this.lastKeyCheck.set(username, now);
      try {
        const count = await registry.keyCount(username);
        if (count === 0) continue;
        const latest = await registry.keyRecord(username, count - 1);
        const pin = this.records.pins[username];
        if (!pin) {
          this.records.pins[username] = { index: latest.index, address: latest.address, verified: false };
        } else if (latest.index > pin.index) {
          const kind = latest.kind === "reset" ? "reset" : "rotation";
          const safety = await this.safetyNumberWith(username, latest.index, latest.address);
          const text =
            kind === "reset"
              ? `${username}'s account was RESET: a new key replaced every older one. If ${username} did not do this, someone else now holds the account. Compare the safety number with ${username} in person before you trust it.`
              : `${username} rotated to a new key (key ${latest.index}). Compare the safety number if you want to be sure.`;
          for (const groupId of this.conversationsWith(username)) {
            this.addEvent(groupId, text, kind === "reset" ? "alarm" : "warning", { username, kind, safetyNumber: safety, verified: false });
          }
          this.records.pins[username] = { index: latest.index, address: latest.address, verified: false };
        }
        const pending = await registry.pendingReset(username);
        const pinned = this.records.pins[username];
        if (pending && pinned.announcedReset !== pending.effectiveAt) {
          const when = new Date(pending.effectiveAt * 1000).toLocaleString();
          for (const groupId of this.conversationsWith(username)) {
            this.addEvent(groupId, `a RESET of ${username}'s account is pending on chain (it takes effect ${when}). If ${username} did not ask for it, tell them: only their current key can cancel it.`, "alarm");
          }
          pinned.announcedReset = pending.effectiveAt;
        }
        this.saveRecords();
      } catch (error) {
        this.reportBackground(error);
      }
    }
    this.notify();
  }

  // ---- live notices ----

  /** Sends one frame on the notice socket if it is open; false (nothing sent) otherwise. */
  sendFrame(text: string): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(text);
    return true;
  }

  private connect(): void {
    if (this.closed) return;
    const url = new URL(WS_PATH, this.session.relayOrigin);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    // The others' texts as the relay starts to store them (early frames), not once it has.
    url.searchParams.set(WS_EARLY_PARAM, "1");
    const socket = new WebSocket(url, wsAuthSubprotocols(this.session.token));
    this.socket = socket;
    socket.onopen = () => {
      this.reconnectMs = 1_000;
      this.scheduleSync();
    };
    socket.onmessage = (event) => {
      let frame: unknown;
      try {
        frame = JSON.parse(String(event.data));
      } catch {
        return;
      }
      if (this.appends.handle(frame)) return;
      const type = (frame as { type?: unknown }).type;
      if (type === "group" || type === "welcome") this.scheduleSync();
      else if (type === "early") this.applyEarly(frame);
    };
    socket.onclose = (event) => {
      // Appends unanswered when the socket goes are sent again over HTTP with the same id.
      if (this.socket === socket) this.appends.closed();
      if (this.closed || this.socket !== socket) return;
      // 4001: the session was revoked (logout elsewhere, a revoked device): no reconnecting with it.
      if (event.code === 4001) return;
      this.timers.push(setTimeout(() => this.connect(), this.reconnectMs));
      this.reconnectMs = Math.min(this.reconnectMs * 2, MAX_RECONNECT_MS);
    };
  }

  /**
   * Shows another user's text the relay handed on before storing it, when the device can apply it now (its
   * log entry is then passed over); otherwise the next sync brings it. A text of this user's other devices
   * waits for the log: its delivery state needs the seq, which an early frame does not have.
   */
  private applyEarly(frame: unknown): void {
    const parsed = EarlyFrame.safeParse(frame);
    if (!parsed.success || parsed.data.entry.sender.username === this.me) return;
    const { groupId, entry } = parsed.data;
    this.run(async () => this.showEvents((await this.device.applyEarly(groupId, entry)).events)).then(
      () => this.notify(),
      () => this.scheduleSync(),
    );
  }

  /**
   * Before live delivery: a linked browser adopts the newer credential the relay holds for it (another device
   * re-authorised it after a rotation while it was away), then key packages are topped up for new chats.
   */
  async prepare(): Promise<void> {
    await this.run(async () => {
      const credential = this.session.linked?.credential;
      if (credential && !bytesEqual(credential, this.device.credentialIdentity)) this.showEvents((await this.device.adoptCredential(credential)).events);
      await this.device.ensureKeyPackages();
    });
  }

  start(): void {
    this.connect();
    const poll = () => {
      if (this.closed) return;
      this.scheduleSync();
      this.timers.push(setTimeout(poll, POLL_MS));
    };
    this.timers.push(setTimeout(poll, POLL_MS));
    this.scheduleSync();
  }

  /** After this user's key rotation: the device re-opens with the new keys and re-authorises its leaf everywhere. */
  async followRotation(session: Session): Promise<void> {
    await this.run(async () => {
      this.session = session;
      this.device = await MlsDevice.open(deviceOptions(session, this.storage, () => this.session.token, (messages) => this.deliver(messages), this.appends));
      const { events } = await this.device.reauthorize();
      this.showEvents(events);
    });
    this.notify();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.socket?.close(1000);
    await this.queue;
    await this.storage.flushed().catch(() => undefined);
    this.storage.close();
    this.releaseAccount();
    if (open === this) open = undefined;
  }
}

/** The messenger of the logged-in user in this page, if any (the account hooks reach it). */
let open: BrowserMessenger | undefined;

/**
 * Opens the logged-in user's messaging: holds the account for this tab, opens (or creates, on a browser
 * holding the identity key) its MLS device, publishes key packages, and starts live delivery.
 */
export async function openMessenger(session: Session): Promise<Messenger> {
  const release = await holdAccount(session.username);
  let storage: BrowserDeviceStorage | undefined;
  try {
    storage = await openDeviceStorage(session.username);
    const holder: { messenger?: BrowserMessenger } = {};
    const opened = storage;
    // Each frame waits, as each request does, until the device's writes are in IndexedDB.
    const appends = new SocketAppends({ send: (text) => holder.messenger?.sendFrame(text) ?? false, before: () => opened.flushed() });
    const device = await MlsDevice.open(
      deviceOptions(
        { ...session, ...(session.linked ? { deviceSecret: session.linked.deviceSecret } : {}) },
        storage,
        () => holder.messenger?.session.token ?? session.token,
        (messages) => holder.messenger!.deliver(messages),
        appends,
      ),
    );
    const messenger = new BrowserMessenger(session, storage, device, release, appends);
    holder.messenger = messenger;
    await messenger.prepare();
    messenger.start();
    open = messenger;
    return messenger;
  } catch (error) {
    storage?.close();
    release();
    throw error;
  }
}

/** The MLS half of the account flows (rotation, linking this browser as a device). */
export const accountHooks: AccountHooks = {
  async afterRotation(session) {
    if (open && open.me === session.username) return open.followRotation(session);
    const storage = await openDeviceStorage(session.username);
    try {
      const device = await MlsDevice.open(deviceOptions(session, storage, () => session.token));
      await device.reauthorize();
      await storage.flushed();
    } finally {
      storage.close();
    }
  },
  async createLinked(parts: LinkedDeviceParts) {
    const storage = await openDeviceStorage(parts.username);
    try {
      await MlsDevice.createLinked(
        {
          ...deviceOptions(
            { username: parts.username, chainId: parts.chainId, contract: parts.contract, registry: parts.registry, identityKeys: [], token: "", relayOrigin: location.origin, deviceSecret: parts.deviceSecret },
            storage,
            () => "",
          ),
          deviceSecret: parts.deviceSecret,
        },
        { deviceId: parts.deviceId, signatureKey: parts.signatureKey, credential: parts.credential },
      );
      await storage.flushed();
    } finally {
      storage.close();
    }
  },
  async openLinked(params) {
    const storage = await openDeviceStorage(params.username);
    try {
      const device = await MlsDevice.open(
        deviceOptions({ ...params, identityKeys: [], token: "", relayOrigin: location.origin }, storage, () => ""),
      );
      return { signText: (text: string) => device.signText(text) };
    } finally {
      storage.close();
    }
  },
};
