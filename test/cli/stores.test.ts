/**
 * The client's stores behave alike on files and in memory: the same checks run against both, and the
 * file stores keep the on-disk layout existing home folders have.
 */
import { expect } from "chai";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Wallet } from "ethers";
import { ChatError } from "../../protocol/errors";
import { Home } from "../../cli/home";
import { fileStores, historyDedupStore, memoryStores, type ClientStores, type HistoryEntry } from "../../cli/stores";

const errorCode = async (work: Promise<unknown>): Promise<string | undefined> => {
  try {
    await work;
  } catch (error) {
    expect(error).to.be.instanceOf(ChatError);
    return (error as ChatError).code;
  }
  return undefined;
};

const kinds: [string, () => { stores: ClientStores; done: () => void }][] = [
  [
    "files",
    () => {
      const root = mkdtempSync(path.join(os.tmpdir(), "chat-stores-"));
      return { stores: fileStores(new Home(root), { fastKdf: true }), done: () => rmSync(root, { recursive: true, force: true }) };
    },
  ],
  ["memory", () => ({ stores: memoryStores(), done: () => undefined })],
];

for (const [kind, make] of kinds) {
  describe(`cli/stores (${kind})`, function () {
    this.timeout(30_000);
    let stores: ClientStores;
    let done: () => void;
    beforeEach(() => ({ stores, done } = make()));
    afterEach(() => done());

    it("keys: stored pending, confirmed, unlocked only with the right password; a pending key can be dropped", async () => {
      const privateKey = Wallet.createRandom().privateKey;
      const stored = await stores.keys.store({ username: "alice", index: 0, privateKey, password: "pw-right-1", pending: true });
      expect(stored.address).to.equal(new Wallet(privateKey).address);
      expect(stores.keys.localKeys("alice").map((k) => [k.index, k.pending ?? false])).to.deep.equal([[0, true]]);
      stores.keys.confirm("alice", 0);
      expect(stores.keys.localKeys("alice").map((k) => k.pending ?? false)).to.deep.equal([false]);
      expect(await stores.keys.unlock("alice", 0, "pw-right-1")).to.deep.equal({ index: 0, privateKey });
      expect(await errorCode(stores.keys.unlock("alice", 0, "pw-wrong-1"))).to.equal("WRONG_PASSWORD");
      expect(await errorCode(stores.keys.unlock("alice", 1, "pw-right-1"))).to.equal("NO_LOCAL_KEY");
      stores.keys.dropPending("alice", 0); // confirmed: kept
      await stores.keys.store({ username: "alice", index: 1, privateKey: Wallet.createRandom().privateKey, password: "pw-right-1", pending: true });
      stores.keys.dropPending("alice", 1);
      expect(stores.keys.localKeys("alice").map((k) => k.index)).to.deep.equal([0]);
      expect(stores.keys.localKeys("bob")).to.deep.equal([]);
    });

    it("sessions: written current key first, read back, deleted once", () => {
      expect(stores.sessions.read()).to.equal(undefined);
      const keys = [
        { index: 0, privateKey: "0x01" },
        { index: 2, privateKey: "0x02" },
      ];
      stores.sessions.write({ relay: "https://r", username: "alice", token: "t", expiresAt: 1, keyIndex: 2, keys });
      expect(stores.sessions.read()?.keys.map((k) => k.index)).to.deep.equal([2, 0]);
      expect(keys.map((k) => k.index), "the caller's array is left alone").to.deep.equal([0, 2]);
      expect(stores.sessions.delete()).to.equal(true);
      expect(stores.sessions.delete()).to.equal(false);
      expect(stores.sessions.read()).to.equal(undefined);
    });

    it("history: appended per peer in order, and its incoming ids are the dedup store", () => {
      const entry = (id: string, peer: string, direction: "in" | "out"): HistoryEntry => ({ id, direction, peer, body: id, timestamp: 1, at: 2 });
      stores.history.append("bob", entry("m1", "alice", "in"));
      stores.history.append("bob", entry("m2", "alice", "out"));
      stores.history.append("bob", entry("m3", "carol", "in"));
      expect(stores.history.read("bob", "alice").map((e) => e.id)).to.deep.equal(["m1", "m2"]);
      expect(stores.history.read("alice", "bob")).to.deep.equal([]);
      const dedup = historyDedupStore(stores.history, "bob");
      expect([dedup.has("alice/m1"), dedup.has("alice/m2"), dedup.has("carol/m3"), dedup.has("carol/m1")]).to.deep.equal([true, false, true, false]);
      dedup.add("carol/m1");
      expect(dedup.has("carol/m1")).to.equal(true);
    });

    it("outbox: put replaces by id, remove drops one", () => {
      const entry = (id: string, body: string) => ({ id, to: "bob", envelope: "{}", body, timestamp: 1 });
      stores.outbox.put("alice", entry("m1", "first"));
      stores.outbox.put("alice", entry("m2", "second"));
      stores.outbox.put("alice", entry("m1", "first again"));
      expect(stores.outbox.list("alice").map((e) => [e.id, e.body])).to.deep.equal([["m2", "second"], ["m1", "first again"]]);
      stores.outbox.remove("alice", "m2");
      expect(stores.outbox.list("alice").map((e) => e.id)).to.deep.equal(["m1"]);
      expect(stores.outbox.list("bob")).to.deep.equal([]);
    });

    it("contacts and relay pins: put and merged updates read back per user and per origin", () => {
      const pin = { keys: [{ index: 0, publicKey: "0xab", kind: "registered" as const, timestamp: 5 }] };
      stores.contacts.put("alice", "bob", pin);
      expect(stores.contacts.get("alice", "bob")).to.deep.equal(pin);
      expect(stores.contacts.get("carol", "bob")).to.equal(undefined);
      stores.relayPins.update("https://r", { certSha256: "AA" });
      expect(stores.relayPins.update("https://r", { chainId: "31337" })).to.deep.equal({ certSha256: "AA", chainId: "31337" });
      expect(stores.relayPins.get("https://r")).to.deep.equal({ certSha256: "AA", chainId: "31337" });
      expect(stores.relayPins.get("https://other")).to.equal(undefined);
    });
  });
}

describe("cli/stores (files): the layout of existing home folders", () => {
  it("keeps session.json, relays.json and users/<name>/{contacts.json,outbox.json,history/<peer>.jsonl}", () => {
    const root = mkdtempSync(path.join(os.tmpdir(), "chat-stores-"));
    try {
      const stores = fileStores(new Home(root), { fastKdf: true });
      stores.sessions.write({ relay: "https://r", username: "alice", token: "t", expiresAt: 1, keyIndex: 0, keys: [] });
      stores.relayPins.update("https://r", { chainId: "1" });
      stores.contacts.put("alice", "bob", { keys: [] });
      stores.outbox.put("alice", { id: "m1", to: "bob", envelope: "{}", body: "b", timestamp: 1 });
      stores.history.append("alice", { id: "m0", direction: "in", peer: "bob", body: "b", timestamp: 1, at: 1 });
      const json = (file: string) => JSON.parse(readFileSync(path.join(root, file), "utf8"));
      expect(json("session.json").username).to.equal("alice");
      expect(json("relays.json")).to.deep.equal({ "https://r": { chainId: "1" } });
      expect(json("users/alice/contacts.json")).to.deep.equal({ bob: { keys: [] } });
      expect(json("users/alice/outbox.json").map((e: { id: string }) => e.id)).to.deep.equal(["m1"]);
      expect(JSON.parse(readFileSync(path.join(root, "users/alice/history/bob.jsonl"), "utf8").trim()).id).to.equal("m0");
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
