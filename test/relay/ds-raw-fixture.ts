/**
 * Helpers of the Delivery Service tests that speak the wire directly (no tests here): one real relay
 * process over MariaDB and anvil (ChatRegistry) per suite, registered users with sessions, /v2 calls, raw
 * WebSockets that record every frame, and groups made of opaque bytes (the relay never parses MLS).
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { WS_EARLY_PARAM, WS_PATH } from "../../protocol/wire";
import { encodeBase64 } from "../../protocol/wire-v2";
import { startChain, type ChainFixture } from "../helpers/chain";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";
import { waitFor } from "../helpers/wait";
import { login, registerUser } from "./accounts-fixture";

export type Session = TestUser & { token: string };

/** A raw socket that records every frame it receives. */
export interface Listener {
  ws: WebSocket;
  frames: any[];
  groupFrames(groupId: string): any[];
  /** sends `frame` as one JSON text frame */
  send(frame: unknown): void;
}

/** Random MLS-looking bytes, base64 as the wire carries them. */
export const bytes = (n = 64) => encodeBase64(new Uint8Array(randomBytes(n)));
export const newGroupId = () => randomBytes(32).toString("hex");
export const device = (u: { username: string }, deviceId: string) => ({ username: u.username, deviceId });

export interface RawDs {
  chain(): ChainFixture;
  relay(): RelayProcess;
  /** the relay's database */
  database(): TestDatabase;
  /** a registered user, logged in with its identity key (a session bound to no device) */
  user(prefix: string): Promise<Session>;
  /** a /v2 call as `who` acting as `deviceId`, whatever its status */
  request(who: { token: string }, deviceId: string, method: string, pathname: string, body?: unknown): Promise<{ status: number; body: any }>;
  /** a /v2 call that must answer 200; its body */
  call(who: { token: string }, deviceId: string, method: string, pathname: string, body?: unknown): Promise<any>;
  /** a socket of `token`'s session, resolved once the relay said it is ready; `early`: it asks for early frames */
  listen(token: string, options?: { early?: boolean }): Promise<Listener>;
  /** a group of `owner` (device o1) and `members` (device m1 each), added by its first commit: epoch 1, seq 1 */
  groupOf(owner: Session, members: Session[]): Promise<string>;
  cursorOf(who: Session, deviceId: string, groupId: string, of: { username: string; deviceId: string }): Promise<number | undefined>;
}

/**
 * Starts the relay (and its chain and database, named after `name`; `env` on top of its settings) before
 * the suite's tests and stops everything, sockets included, after them.
 */
export function useRawDs(name: string, options: { env?: Record<string, string> } = {}): RawDs {
  let chain: ChainFixture | undefined;
  let db: TestDatabase | undefined;
  let relay: RelayProcess | undefined;
  const sockets: WebSocket[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase(`chat_${name}`);
    relay = await startRelayProcess({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir: mkdtempSync(path.join(tmpdir(), `chat-${name}-`)),
      env: { INSECURE_HTTP: "1", LOG_LEVEL: "warn", ...options.env },
    });
  });
  after(async () => {
    for (const ws of sockets) ws.terminate();
    await relay?.stop();
    await db?.drop();
    await chain?.close();
  });

  const started = <T>(what: string, value: T | undefined): T => {
    if (value === undefined) throw new Error(`the ${what} is not started yet`);
    return value;
  };

  const ds: RawDs = {
    chain: () => started("chain", chain),
    relay: () => started("relay", relay),
    database: () => started("database", db),

    async user(prefix) {
      const u = newTestUser(uniqueUsername(prefix));
      const registered = await registerUser(ds.relay().url, ds.chain().domain, u);
      expect(registered.status, JSON.stringify(registered.body)).to.equal(200);
      const session = await login(ds.relay().url, ds.chain().domain, u);
      expect(session.status).to.equal(200);
      return { ...u, token: session.body.token };
    },

    async request(who, deviceId, method, pathname, body) {
      const headers: Record<string, string> = { authorization: `Bearer ${who.token}`, "x-device-id": deviceId };
      if (body !== undefined) headers["content-type"] = "application/json";
      const response = await fetch(`${ds.relay().url}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await response.text();
      return { status: response.status, body: text ? JSON.parse(text) : undefined };
    },

    async call(who, deviceId, method, pathname, body) {
      const { status, body: answer } = await ds.request(who, deviceId, method, pathname, body);
      expect(status, `${method} ${pathname}: ${JSON.stringify(answer)?.slice(0, 300)}`).to.equal(200);
      return answer;
    },

    listen(token, options = {}) {
      return new Promise((resolve, reject) => {
        const query = options.early ? `?${WS_EARLY_PARAM}=1` : "";
        const ws = new WebSocket(ds.relay().url.replace(/^http/, "ws") + WS_PATH + query, { headers: { authorization: `Bearer ${token}` }, perMessageDeflate: false });
        sockets.push(ws);
        const listener: Listener = {
          ws,
          frames: [],
          groupFrames: (groupId) => listener.frames.filter((f) => f.type === "group" && f.groupId === groupId),
          send: (frame) => ws.send(JSON.stringify(frame)),
        };
        ws.on("message", (data) => listener.frames.push(JSON.parse(data.toString())));
        ws.on("error", reject);
        ws.on("open", () => waitFor("ready frame", () => listener.frames.some((f) => f.type === "ready"), 30_000, 20).then(() => resolve(listener), reject));
      });
    },

    async groupOf(owner, members) {
      const groupId = newGroupId();
      await ds.call(owner, "o1", "POST", "/v2/groups", { groupId, members: [device(owner, "o1")] });
      const commit = await ds.call(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, {
        epoch: 0,
        id: `add-${randomBytes(4).toString("hex")}`,
        bytes: bytes(),
        add: members.map((m) => device(m, "m1")),
      });
      expect(commit).to.include({ accepted: true, seq: 1 });
      return groupId;
    },

    async cursorOf(who, deviceId, groupId, of) {
      const { members } = await ds.call(who, deviceId, "GET", `/v2/groups/${groupId}/members`);
      return members.find((m: any) => m.username === of.username && m.deviceId === of.deviceId)?.cursor as number | undefined;
    },
  };
  return ds;
}
