import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import mysql, { type Pool, type RowDataPacket } from "mysql2/promise";
import { MYSQL_ADMIN_URL, createTestDatabase, type TestDatabase } from "../helpers/mysql";
import {
  APPLICATION_EPOCH_WINDOW,
  DsError,
  INITIAL_EPOCH,
  MAX_DEVICES_PER_USER,
  MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE,
  MAX_READ_LIMIT,
  deviceKey,
  type DeliveryServiceStore,
  type DeviceRef,
  type LogEntry,
} from "../../relay/storage/ds-types";
import { createMemoryDeliveryServiceStore } from "../../relay/storage/ds-memory";
import { createMysqlDeliveryServiceStore } from "../../relay/storage/ds-mysql";
import { createFileDeliveryServiceStore } from "../../relay/storage/ds-file";
import { createTestPool } from "./messaging-helpers";
import {
  createGroup as createMlsGroup,
  defaultCapabilities,
  defaultLifetime,
  generateKeyPackage,
  getCiphersuiteFromName,
  getCiphersuiteImpl,
} from "ts-mls";

const NOW = 1_700_000_000_000;
const DAY = 24 * 3600 * 1000;
const dev = (username: string, deviceId = "d1"): DeviceRef => ({ username, deviceId });
const alice = dev("alice");
const bob = dev("bob");
const carol = dev("carol");
const bytes = (text: string) => new TextEncoder().encode(text);
const text = (b: Uint8Array) => new TextDecoder().decode(b);
const newGroupId = () => new Uint8Array(randomBytes(32));

async function codeOf(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error, "expected a DsError").to.be.instanceOf(DsError);
  return (error as DsError).code;
}

/**
 * Two handles on one store: for MySQL two pools, as two relay instances would have; for memory the same
 * object twice. Races are run across both.
 */
interface Instances {
  one: DeliveryServiceStore;
  two: DeliveryServiceStore;
}

/** The same contract for every Delivery Service store: the relay's ordering guarantees rest on it. */
function deliveryServiceContract(name: string, make: () => Promise<Instances>) {
  describe(`delivery service contract: ${name}`, function () {
    let ds: DeliveryServiceStore;
    let other: DeliveryServiceStore;

    beforeEach(async () => {
      ({ one: ds, two: other } = await make());
    });
    afterEach(async () => {
      await ds.close();
      await other.close();
    });

    describe("key packages", () => {
      it("hands each one-time package out once under 20 concurrent claims from two instances, then the last resort", async () => {
        const oneTime = Array.from({ length: 5 }, (_, i) => ({ bytes: bytes(`bob-kp-${i}`), notAfter: NOW + DAY }));
        const counts = await ds.putKeyPackages({ device: bob, oneTime, lastResort: { bytes: bytes("bob-last"), notAfter: NOW + DAY }, now: NOW });
        expect(counts).to.deep.equal({ oneTime: 5, lastResort: true });

        const claims = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? ds : other).claimKeyPackages({ username: "bob", now: NOW })));
        expect(claims.every((c) => c.length === 1 && c[0].deviceId === "d1")).to.equal(true);
        const handed = claims.map((c) => c[0]);
        const oneTimeHanded = handed.filter((k) => !k.lastResort).map((k) => text(k.bytes));
        expect(oneTimeHanded.sort()).to.deep.equal(["bob-kp-0", "bob-kp-1", "bob-kp-2", "bob-kp-3", "bob-kp-4"]);
        const lastHanded = handed.filter((k) => k.lastResort);
        expect(lastHanded).to.have.length(15);
        expect(lastHanded.every((k) => text(k.bytes) === "bob-last" && k.notAfter === NOW + DAY)).to.equal(true);
        expect(await ds.keyPackageCounts({ device: bob, now: NOW })).to.deep.equal({ oneTime: 0, lastResort: true });
      });

      it("claims one package per device of the user; the device replaces its last-resort package", async () => {
        await ds.putKeyPackages({ device: dev("bob", "laptop"), oneTime: [{ bytes: bytes("laptop-1"), notAfter: NOW + DAY }], now: NOW });
        await ds.putKeyPackages({ device: dev("bob", "phone"), oneTime: [], lastResort: { bytes: bytes("phone-last-1"), notAfter: NOW + DAY }, now: NOW });
        await ds.putKeyPackages({ device: carol, oneTime: [{ bytes: bytes("carol-1"), notAfter: NOW + DAY }], now: NOW });

        const first = await ds.claimKeyPackages({ username: "bob", now: NOW });
        expect(first.map((k) => [k.deviceId, text(k.bytes), k.lastResort])).to.deep.equal([
          ["laptop", "laptop-1", false],
          ["phone", "phone-last-1", true],
        ]);
        // the laptop has nothing left and no last resort: it is skipped
        const second = await ds.claimKeyPackages({ username: "bob", now: NOW });
        expect(second.map((k) => [k.deviceId, text(k.bytes)])).to.deep.equal([["phone", "phone-last-1"]]);
        await ds.putKeyPackages({ device: dev("bob", "phone"), oneTime: [], lastResort: { bytes: bytes("phone-last-2"), notAfter: NOW + 2 * DAY }, now: NOW });
        const third = await ds.claimKeyPackages({ username: "bob", now: NOW });
        expect(third.map((k) => [k.deviceId, text(k.bytes), k.notAfter])).to.deep.equal([["phone", "phone-last-2", NOW + 2 * DAY]]);
        expect(await ds.claimKeyPackages({ username: "nobody", now: NOW })).to.deep.equal([]);

        await ds.removeDevice(dev("bob", "phone"));
        expect(await ds.claimKeyPackages({ username: "bob", now: NOW })).to.deep.equal([]);
        expect((await ds.claimKeyPackages({ username: "carol", now: NOW })).map((k) => text(k.bytes))).to.deep.equal(["carol-1"]);
      });

      it("an upload with replace drops every earlier package of that device, and only of that device", async () => {
        const phone = dev("bob", "phone");
        const kp = (name: string) => ({ bytes: bytes(name), notAfter: NOW + DAY });
        await ds.putKeyPackages({ device: phone, oneTime: [kp("old-1"), kp("old-2")], lastResort: kp("old-last"), now: NOW });
        await ds.putKeyPackages({ device: dev("bob", "laptop"), oneTime: [kp("laptop-1")], now: NOW });
        expect(await other.putKeyPackages({ device: phone, oneTime: [kp("new-1")], lastResort: kp("new-last"), replace: true, now: NOW })).to.deep.equal({
          oneTime: 1,
          lastResort: true,
        });
        const claimed = [];
        for (let i = 0; i < 3; i++) claimed.push(...(await ds.claimKeyPackages({ username: "bob", now: NOW })).map((k) => `${k.deviceId}:${text(k.bytes)}`));
        expect(claimed).to.deep.equal(["laptop:laptop-1", "phone:new-1", "phone:new-last", "phone:new-last"]);
      });

      it("never hands out an expired package and purges expired ones", async () => {
        await ds.putKeyPackages({
          device: bob,
          oneTime: [
            { bytes: bytes("short"), notAfter: NOW + 1_000 },
            { bytes: bytes("long"), notAfter: NOW + DAY },
          ],
          lastResort: { bytes: bytes("last"), notAfter: NOW + 2_000 },
          now: NOW,
        });
        const later = NOW + 1_000; // "short" expires exactly now: notAfter is exclusive
        expect(await ds.keyPackageCounts({ device: bob, now: later })).to.deep.equal({ oneTime: 1, lastResort: true });
        expect((await ds.claimKeyPackages({ username: "bob", now: later })).map((k) => text(k.bytes))).to.deep.equal(["long"]);
        expect((await ds.claimKeyPackages({ username: "bob", now: later })).map((k) => text(k.bytes))).to.deep.equal(["last"]);
        expect(await ds.claimKeyPackages({ username: "bob", now: NOW + 2_000 })).to.deep.equal([]);
        expect(await ds.purge({ now: NOW + 2_000, logTtlMs: DAY })).to.deep.equal({ keyPackages: 2, welcomes: 0, logEntries: 0 });
        expect(await ds.purge({ now: NOW + 2_000, logTtlMs: DAY })).to.deep.equal({ keyPackages: 0, welcomes: 0, logEntries: 0 });
      });

      it("enforces the caps and lifetimes, storing nothing from a refused upload", async () => {
        const kp = (i: number) => ({ bytes: bytes(`kp-${i}`), notAfter: NOW + DAY });
        await ds.putKeyPackages({ device: bob, oneTime: Array.from({ length: MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE - 1 }, (_, i) => kp(i)), now: NOW });
        expect(await codeOf(ds.putKeyPackages({ device: bob, oneTime: [kp(1), kp(2)], now: NOW }))).to.equal("DS_LIMIT");
        expect((await ds.keyPackageCounts({ device: bob, now: NOW })).oneTime).to.equal(MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE - 1);
        expect((await ds.putKeyPackages({ device: bob, oneTime: [kp(3)], now: NOW })).oneTime).to.equal(MAX_ONE_TIME_KEY_PACKAGES_PER_DEVICE);

        for (let i = 0; i < MAX_DEVICES_PER_USER; i++) await ds.putKeyPackages({ device: dev("dave", `dev${i}`), oneTime: [kp(i)], now: NOW });
        expect(await codeOf(ds.putKeyPackages({ device: dev("dave", "one_too_many"), oneTime: [kp(0)], now: NOW }))).to.equal("DS_LIMIT");
        expect(await ds.claimKeyPackages({ username: "dave", now: NOW })).to.have.length(MAX_DEVICES_PER_USER);

        expect(await codeOf(ds.putKeyPackages({ device: carol, oneTime: [{ bytes: bytes("x"), notAfter: NOW }], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.putKeyPackages({ device: carol, oneTime: [{ bytes: bytes("x"), notAfter: NOW + 100 * DAY }], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.putKeyPackages({ device: carol, oneTime: [{ bytes: new Uint8Array(0), notAfter: NOW + DAY }], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.putKeyPackages({ device: carol, oneTime: [{ bytes: new Uint8Array(16 * 1024 + 1), notAfter: NOW + DAY }], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.putKeyPackages({ device: dev("Carol!"), oneTime: [], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.putKeyPackages({ device: dev("carol", "bad id"), oneTime: [], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await ds.keyPackageCounts({ device: carol, now: NOW })).to.deep.equal({ oneTime: 0, lastResort: false });
      });
    });

    describe("groups and the ordered log", () => {
      const commit = (groupId: Uint8Array, epoch: number, sender: DeviceRef, messageId: string, extra = {}) =>
        ({ groupId, epoch, sender, messageId, bytes: bytes(`commit ${messageId}`), receivedAt: NOW, ...extra });
      const app = (groupId: Uint8Array, epoch: number, sender: DeviceRef, messageId: string, receivedAt = NOW) =>
        ({ groupId, epoch, sender, messageId, bytes: bytes(`app ${messageId}`), receivedAt });

      it("starts a group at INITIAL_EPOCH with an empty log, and refuses a second group with that id", async () => {
        const groupId = newGroupId();
        expect(await ds.createGroup({ groupId, members: [alice], now: NOW })).to.deep.equal({ groupId, epoch: INITIAL_EPOCH, lastSeq: 0 });
        expect(await codeOf(other.createGroup({ groupId, members: [bob], now: NOW }))).to.equal("DS_GROUP_EXISTS");
        expect(await ds.group(groupId)).to.deep.equal({ groupId, epoch: 0, lastSeq: 0 });
        expect(await ds.group(newGroupId())).to.equal(undefined);
        expect(await ds.members(groupId)).to.deep.equal([{ ...alice, cursor: 0 }]);
        expect(await codeOf(ds.createGroup({ groupId: new Uint8Array(31), members: [alice], now: NOW }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.read({ groupId: newGroupId(), afterSeq: 0, limit: 10 }))).to.equal("DS_UNKNOWN_GROUP");
      });

      it("accepts exactly one of 10 concurrent commits for the same epoch; the others learn the current epoch", async () => {
        const groupId = newGroupId();
        const members = Array.from({ length: 10 }, (_, i) => dev(`member_${i}`));
        await ds.createGroup({ groupId, members, now: NOW });
        const results = await Promise.all(members.map((m, i) => (i % 2 ? ds : other).appendCommit(commit(groupId, 0, m, `c-${i}`))));
        const accepted = results.filter((r) => r.accepted);
        expect(accepted).to.have.length(1);
        expect(accepted[0]).to.deep.equal({ accepted: true, seq: 1, epoch: 0, duplicate: false });
        expect(results.filter((r) => !r.accepted)).to.deep.equal(Array.from({ length: 9 }, () => ({ accepted: false, currentEpoch: 1 })));
        expect(await ds.group(groupId)).to.deep.include({ epoch: 1, lastSeq: 1 });
        const log = await other.read({ groupId, afterSeq: 0, limit: 10 });
        expect(log).to.have.length(1);
        const winner = members[results.findIndex((r) => r.accepted)];
        expect(log[0]).to.deep.include({ seq: 1, epoch: 0, kind: "handshake", sender: winner });

        // a loser catches up and retries against the new epoch; a retried winner is told it was accepted
        const loser = members[results.findIndex((r) => !r.accepted)];
        expect(await ds.appendCommit(commit(groupId, 1, loser, "retry"))).to.deep.equal({ accepted: true, seq: 2, epoch: 1, duplicate: false });
        const winnerId = `c-${members.indexOf(winner)}`;
        expect(await other.appendCommit(commit(groupId, 0, winner, winnerId))).to.deep.equal({ accepted: true, seq: 1, epoch: 0, duplicate: true });
        expect(await ds.appendCommit(commit(groupId, 0, winner, "stale"))).to.deep.equal({ accepted: false, currentEpoch: 2 });
        expect(await ds.appendCommit(commit(groupId, 5, winner, "future"))).to.deep.equal({ accepted: false, currentEpoch: 2 });
      });

      it("stores an application message once however often it is retried, and bounds its epoch", async () => {
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        const twice = await Promise.all([ds.appendApplication(app(groupId, 0, alice, "m1")), other.appendApplication(app(groupId, 0, alice, "m1"))]);
        expect(twice.map((r) => r.accepted && r.seq)).to.deep.equal([1, 1]);
        expect(twice.map((r) => r.accepted && r.duplicate).sort()).to.deep.equal([false, true]);
        // alice was caught up: the stored one moved her cursor past it, and the retry reports it moved
        expect(twice.map((r) => r.accepted && r.senderCursor)).to.deep.equal([1, 1]);
        // the same id from another device is another message (bob has not read seq 1: his cursor stays)
        expect(await ds.appendApplication(app(groupId, 0, bob, "m1"))).to.deep.equal({ accepted: true, seq: 2, epoch: 0, duplicate: false, senderCursor: 0 });
        expect(await ds.read({ groupId, afterSeq: 0, limit: 10 })).to.have.length(2);

        for (let e = 0; e < APPLICATION_EPOCH_WINDOW + 1; e++) expect((await ds.appendCommit(commit(groupId, e, alice, `c${e}`))).accepted).to.equal(true);
        const current = APPLICATION_EPOCH_WINDOW + 1;
        expect(await ds.appendApplication(app(groupId, current + 1, bob, "future"))).to.deep.equal({ accepted: false, currentEpoch: current });
        expect(await ds.appendApplication(app(groupId, 0, bob, "too-old"))).to.deep.equal({ accepted: false, currentEpoch: current });
        expect((await ds.appendApplication(app(groupId, 1, bob, "late-but-readable"))).accepted).to.equal(true);
        expect((await ds.appendApplication(app(groupId, current, bob, "now"))).accepted).to.equal(true);

        expect(await codeOf(ds.appendApplication(app(groupId, current, carol, "outsider")))).to.equal("DS_NOT_MEMBER");
        expect(await codeOf(ds.appendApplication(app(newGroupId(), 0, alice, "nowhere")))).to.equal("DS_UNKNOWN_GROUP");
        expect(await codeOf(ds.appendApplication({ ...app(groupId, current, bob, "big"), bytes: new Uint8Array(256 * 1024 + 1) }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.appendApplication(app(groupId, current, bob, "bad/id")))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.appendApplication(app(groupId, -1, bob, "neg")))).to.equal("DS_BAD_REQUEST");
      });

      it("pages 5,000 entries across 50 epochs in order for a device that was offline throughout", async function () {
        this.timeout(300_000);
        const groupId = newGroupId();
        const offline = dev("offline_member", "laptop");
        await ds.createGroup({ groupId, members: [alice, bob, offline], now: NOW });
        const started = performance.now();
        for (let epoch = 0; epoch < 50; epoch++) {
          // 99 application messages per epoch, sent concurrently through both instances, then the commit
          const sent = await Promise.all(
            Array.from({ length: 99 }, (_, i) => (i % 2 ? ds : other).appendApplication(app(groupId, epoch, i % 3 ? alice : bob, `e${epoch}-m${i}`))),
          );
          expect(sent.every((r) => r.accepted && !r.duplicate)).to.equal(true);
          expect((await ds.appendCommit(commit(groupId, epoch, alice, `e${epoch}-commit`))).accepted).to.equal(true);
        }
        const appendMs = performance.now() - started;
        expect(await ds.group(groupId)).to.deep.include({ epoch: 50, lastSeq: 5_000 });

        const pending = await ds.pendingFor(offline);
        expect(pending).to.deep.equal([{ groupId, cursor: 0, lastSeq: 5_000, epoch: 50 }]);
        const readStarted = performance.now();
        const seen: LogEntry[] = [];
        let cursor = pending[0].cursor;
        for (;;) {
          const page = await other.read({ groupId, afterSeq: cursor, limit: MAX_READ_LIMIT });
          if (page.length === 0) break;
          seen.push(...page);
          cursor = page[page.length - 1].seq;
          expect(await ds.advanceCursor({ device: offline, groupId, seq: cursor })).to.equal(cursor);
        }
        const readMs = performance.now() - readStarted;
        expect(seen.map((e) => e.seq)).to.deep.equal(Array.from({ length: 5_000 }, (_, i) => i + 1));
        for (let epoch = 0; epoch < 50; epoch++) {
          const block = seen.slice(epoch * 100, epoch * 100 + 100);
          expect(block.every((e) => e.epoch === epoch)).to.equal(true);
          expect(block.slice(0, 99).every((e) => e.kind === "application")).to.equal(true);
          expect(block[99]).to.deep.include({ kind: "handshake", messageId: `e${epoch}-commit` });
          expect(text(block[99].bytes)).to.equal(`commit e${epoch}-commit`);
        }
        expect(await ds.pendingFor(offline)).to.deep.equal([]);
        console.log(`      ds-${name}: 5,000 appends in ${appendMs.toFixed(0)} ms; caught up over 50 epochs in ${readMs.toFixed(0)} ms`);
      });

      it("moves cursors forward only, per device, and lists the groups a device is behind in", async () => {
        const g1 = newGroupId();
        const g2 = newGroupId();
        const phone = dev("bob", "phone");
        await ds.createGroup({ groupId: g1, members: [alice, bob, phone], now: NOW });
        await ds.createGroup({ groupId: g2, members: [alice, bob], now: NOW });
        for (let i = 0; i < 10; i++) await ds.appendApplication(app(g1, 0, alice, `g1-${i}`));
        await ds.appendApplication(app(g2, 0, alice, "g2-0"));

        expect(await ds.advanceCursor({ device: bob, groupId: g1, seq: 7 })).to.equal(7);
        expect(await other.advanceCursor({ device: bob, groupId: g1, seq: 4 })).to.equal(7); // a late ack: no step back
        expect(await codeOf(ds.advanceCursor({ device: bob, groupId: g1, seq: 11 }))).to.equal("DS_BAD_REQUEST");
        expect(await codeOf(ds.advanceCursor({ device: carol, groupId: g1, seq: 1 }))).to.equal("DS_NOT_MEMBER");
        expect(await codeOf(ds.advanceCursor({ device: bob, groupId: newGroupId(), seq: 1 }))).to.equal("DS_UNKNOWN_GROUP");

        const byHex = (list: { groupId: Uint8Array }[]) => list.map((p) => Buffer.from(p.groupId).toString("hex")).sort();
        expect(byHex(await ds.pendingFor(bob))).to.deep.equal(byHex([{ groupId: g1 }, { groupId: g2 }]));
        expect(await ds.pendingFor(phone)).to.deep.equal([{ groupId: g1, cursor: 0, lastSeq: 10, epoch: 0 }]); // the other device is independent
        await ds.advanceCursor({ device: bob, groupId: g1, seq: 10 });
        await ds.advanceCursor({ device: bob, groupId: g2, seq: 1 });
        expect(await ds.pendingFor(bob)).to.deep.equal([]);
        expect(await ds.pendingFor(carol)).to.deep.equal([]);
        expect((await ds.members(g1)).find((m) => m.deviceId === "d1" && m.username === "bob")?.cursor).to.equal(10);
      });

      it("stores one group's appends in call order when it says so, small and large alike", async function () {
        if (!ds.appendsInCallOrder) return this.skip();
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        // Called one after another without waiting, some beyond the size a store may batch.
        const ids = Array.from({ length: 30 }, (_, i) => `o-${String(i).padStart(2, "0")}`);
        const results = await Promise.all(
          ids.map((id, i) => ds.appendApplication({ ...app(groupId, 0, i % 2 ? alice : bob, id), bytes: new Uint8Array(i % 7 === 3 ? 20_000 : 100).fill(i) })),
        );
        expect(results.map((r) => (r.accepted ? r.seq : -1))).to.deep.equal(ids.map((_, i) => i + 1));
        expect((await ds.read({ groupId, afterSeq: 0, limit: 100 })).map((e) => e.messageId)).to.deep.equal(ids);
      });

      it("tells device ids apart by case, in batches of appends and of cursor moves too", async () => {
        const groupId = newGroupId();
        const lower = dev("bob", "pc");
        const upper = dev("bob", "PC");
        await ds.createGroup({ groupId, members: [alice, lower], now: NOW });
        // Together, so that stores that batch take them in one batch: "PC" is no member, whatever "pc" is.
        const appended = await Promise.all([
          ds.appendApplication(app(groupId, 0, alice, "a-0")),
          codeOf(ds.appendApplication(app(groupId, 0, upper, "u-0"))),
          ds.appendApplication(app(groupId, 0, lower, "l-0")),
        ]);
        expect(appended[1]).to.equal("DS_NOT_MEMBER");
        // (in either order: a store need not keep the order of calls that run at once)
        const senders = (await ds.read({ groupId, afterSeq: 0, limit: 10 })).map((e) => deviceKey(e.sender)).sort();
        expect(senders).to.deep.equal([deviceKey(alice), deviceKey(lower)].sort());
        const moved = await Promise.all([
          ds.advanceCursor({ device: alice, groupId, seq: 1 }),
          codeOf(ds.advanceCursor({ device: upper, groupId, seq: 2 })),
          ds.advanceCursor({ device: lower, groupId, seq: 1 }),
        ]);
        expect(moved[1]).to.equal("DS_NOT_MEMBER");
        expect((await ds.members(groupId)).map((m) => [m.deviceId, m.cursor]).sort()).to.deep.equal([
          ["d1", 1],
          ["pc", 1],
        ]);
      });

      it("stores a commit's welcomes and membership changes with it; welcomes stay until acknowledged or expired", async () => {
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        await ds.appendApplication(app(groupId, 0, alice, "before"));
        const result = await ds.appendCommit(
          commit(groupId, 0, alice, "add-carol", {
            addMembers: [carol, dev("carol", "phone")],
            removeMembers: [bob],
            welcomes: [
              { recipient: carol, bytes: bytes("welcome carol"), expiresAt: NOW + DAY },
              { recipient: dev("carol", "phone"), bytes: bytes("welcome phone"), expiresAt: NOW + 1_000 },
            ],
          }),
        );
        expect(result).to.deep.equal({ accepted: true, seq: 2, epoch: 0, duplicate: false });
        // new members start after the commit that added them; the removed device is gone; alice's own
        // message moved her cursor, her commit did not
        expect((await ds.members(groupId)).map((m) => `${m.username}/${m.deviceId}@${m.cursor}`).sort()).to.deep.equal(["alice/d1@1", "carol/d1@2", "carol/phone@2"]);
        expect(await ds.pendingFor(carol)).to.deep.equal([]);
        expect(await codeOf(ds.appendApplication(app(groupId, 1, bob, "removed")))).to.equal("DS_NOT_MEMBER");

        const waiting = await other.welcomes({ device: carol, now: NOW, limit: 10 });
        expect(waiting).to.have.length(1);
        expect(waiting[0]).to.deep.include({ groupId, recipient: carol, receivedAt: NOW, expiresAt: NOW + DAY });
        expect(text(waiting[0].bytes)).to.equal("welcome carol");
        expect(await ds.welcomes({ device: dev("carol", "phone"), now: NOW + 1_000, limit: 10 })).to.deep.equal([]); // expired
        await ds.ackWelcome({ device: bob, id: waiting[0].id }); // not bob's: ignored
        expect(await ds.welcomes({ device: carol, now: NOW, limit: 10 })).to.have.length(1);
        await ds.ackWelcome({ device: carol, id: waiting[0].id });
        await other.ackWelcome({ device: carol, id: waiting[0].id }); // twice: harmless
        expect(await ds.welcomes({ device: carol, now: NOW, limit: 10 })).to.deep.equal([]);
        expect(await codeOf(ds.ackWelcome({ device: carol, id: "not-an-id" }))).to.equal("DS_BAD_REQUEST");
        expect(await ds.purge({ now: NOW + 1_000, logTtlMs: DAY })).to.deep.equal({ keyPackages: 0, welcomes: 1, logEntries: 0 });

        // a refused commit stores neither its welcomes nor its membership changes
        const refused = await ds.appendCommit(commit(groupId, 0, alice, "late", { addMembers: [dev("eve")], welcomes: [{ recipient: dev("eve"), bytes: bytes("w"), expiresAt: NOW + DAY }] }));
        expect(refused).to.deep.equal({ accepted: false, currentEpoch: 1 });
        expect(await ds.welcomes({ device: dev("eve"), now: NOW, limit: 10 })).to.deep.equal([]);
        expect((await ds.members(groupId)).some((m) => m.username === "eve")).to.equal(false);

        await other.updateMembers({ groupId, add: [dev("eve")], remove: [dev("carol", "phone")] });
        expect((await ds.members(groupId)).map((m) => `${m.username}/${m.deviceId}@${m.cursor}`).sort()).to.deep.equal(["alice/d1@1", "carol/d1@2", "eve/d1@2"]);
      });

      it("purges old log entries only below every member's cursor", async () => {
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        for (let i = 1; i <= 6; i++) await ds.appendApplication(app(groupId, 0, alice, `m${i}`, i <= 5 ? NOW : NOW + DAY));
        await ds.advanceCursor({ device: alice, groupId, seq: 6 });
        await ds.advanceCursor({ device: bob, groupId, seq: 3 });
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(3); // bob has not read 4 and 5
        expect((await ds.read({ groupId, afterSeq: 0, limit: 10 })).map((e) => e.seq)).to.deep.equal([4, 5, 6]);
        await ds.advanceCursor({ device: bob, groupId, seq: 6 });
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(2); // 6 is too young
        expect((await ds.read({ groupId, afterSeq: 0, limit: 10 })).map((e) => e.seq)).to.deep.equal([6]);
        expect((await ds.read({ groupId, afterSeq: 6, limit: 10 })).map((e) => e.seq)).to.deep.equal([]);
        // seqs keep counting after a purge
        expect(await ds.appendApplication(app(groupId, 0, bob, "after"))).to.deep.include({ accepted: true, seq: 7 });
      });

      it("moves a caught-up sender's cursor past its own application message; a behind sender's, a retry's and a committer's stay", async () => {
        const groupId = newGroupId();
        const phone = dev("alice", "phone");
        await ds.createGroup({ groupId, members: [alice, bob, phone], now: NOW });
        const cursors = async () => Object.fromEntries((await other.members(groupId)).map((m) => [`${m.username}/${m.deviceId}`, m.cursor]));
        const stored = (seq: number, senderCursor: number) => ({ accepted: true, seq, epoch: 0, duplicate: false, senderCursor });

        // alice stands right before each new entry: each of her messages moves her cursor onto it
        expect(await ds.appendApplication(app(groupId, 0, alice, "a1"))).to.deep.equal(stored(1, 1));
        expect(await other.appendApplication(app(groupId, 0, alice, "a2"))).to.deep.equal(stored(2, 2));
        // bob has not read 1 and 2, and alice's phone is a device of its own: both are behind and stay
        expect(await ds.appendApplication(app(groupId, 0, bob, "b1"))).to.deep.equal(stored(3, 0));
        expect(await other.appendApplication(app(groupId, 0, phone, "p1"))).to.deep.equal(stored(4, 0));
        expect(await cursors()).to.deep.equal({ "alice/d1": 2, "alice/phone": 0, "bob/d1": 0 });
        // alice has not read 3 and 4: now she is behind
        expect(await ds.appendApplication(app(groupId, 0, alice, "a3"))).to.deep.equal(stored(5, 2));
        // bob catches up by a cursor move: his next message moves his cursor again
        expect(await ds.advanceCursor({ device: bob, groupId, seq: 5 })).to.equal(5);
        expect(await other.appendApplication(app(groupId, 0, bob, "b2"))).to.deep.equal(stored(6, 6));

        // A retry reports the cursor as it is now and moves nothing, even when that cursor stands right
        // before the retried entry (alice at 4, her a3 at 5).
        expect(await ds.advanceCursor({ device: alice, groupId, seq: 4 })).to.equal(4);
        expect(await other.appendApplication(app(groupId, 0, alice, "a3"))).to.deep.equal({ accepted: true, seq: 5, epoch: 0, duplicate: true, senderCursor: 4 });
        expect(await ds.appendApplication(app(groupId, 0, alice, "a1"))).to.deep.equal({ accepted: true, seq: 1, epoch: 0, duplicate: true, senderCursor: 4 });
        expect(await other.appendApplication(app(groupId, 0, bob, "b1"))).to.deep.equal({ accepted: true, seq: 3, epoch: 0, duplicate: true, senderCursor: 6 });
        expect(await cursors()).to.deep.equal({ "alice/d1": 4, "alice/phone": 0, "bob/d1": 6 });

        // A commit never moves its sender's cursor, caught up as bob is, nor does its retry; it reports none.
        expect(await ds.appendCommit(commit(groupId, 0, bob, "c1"))).to.deep.equal({ accepted: true, seq: 7, epoch: 0, duplicate: false });
        expect(await other.appendCommit(commit(groupId, 0, bob, "c1"))).to.deep.equal({ accepted: true, seq: 7, epoch: 0, duplicate: true });
        expect(await cursors()).to.deep.equal({ "alice/d1": 4, "alice/phone": 0, "bob/d1": 6 });
        // ...so bob is behind his own commit: his next message leaves his cursor at 6
        expect(await ds.appendApplication(app(groupId, 1, bob, "b3"))).to.deep.equal({ accepted: true, seq: 8, epoch: 1, duplicate: false, senderCursor: 6 });
        // a refused message moves nothing either
        expect(await ds.appendApplication(app(groupId, 2, bob, "b4"))).to.deep.equal({ accepted: false, currentEpoch: 1 });
        expect(await cursors()).to.deep.equal({ "alice/d1": 4, "alice/phone": 0, "bob/d1": 6 });
      });

      it("moves the cursor in the append's own step: 20 concurrent messages of a caught-up device through two instances each move it", async () => {
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        const results = await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? ds : other).appendApplication(app(groupId, 0, alice, `c${i}`))));
        // Each append found the cursor right before its own seq, which only holds if the previous append's
        // move was already part of the state the next one saw.
        const answers = results.map((r) => (r.accepted ? { seq: r.seq, senderCursor: r.senderCursor, duplicate: r.duplicate } : { seq: -1 }));
        expect(answers.sort((a, b) => a.seq - b.seq)).to.deep.equal(Array.from({ length: 20 }, (_, i) => ({ seq: i + 1, senderCursor: i + 1, duplicate: false })));
        expect((await other.members(groupId)).map((m) => `${m.username}/${m.deviceId}@${m.cursor}`).sort()).to.deep.equal(["alice/d1@20", "bob/d1@0"]);
        expect(await ds.pendingFor(alice)).to.deep.equal([]);
        expect(await ds.pendingFor(bob)).to.deep.equal([{ groupId, cursor: 0, lastSeq: 20, epoch: 0 }]);
      });

      it("purges only what every member has passed, also when senders' cursors moved with their own messages", async () => {
        const groupId = newGroupId();
        await ds.createGroup({ groupId, members: [alice, bob], now: NOW });
        for (let i = 1; i <= 4; i++) await ds.appendApplication(app(groupId, 0, alice, `a${i}`));
        // alice is at 4 by her own messages, bob at 0: nothing is passed by both
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(0);
        // bob's own message while behind keeps him at 0
        expect(await ds.appendApplication(app(groupId, 0, bob, "b1"))).to.deep.include({ seq: 5, senderCursor: 0 });
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(0);
        expect((await ds.read({ groupId, afterSeq: 0, limit: 10 })).map((e) => e.seq)).to.deep.equal([1, 2, 3, 4, 5]);
        await ds.advanceCursor({ device: bob, groupId, seq: 3 });
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(3);
        // bob at 5, alice still at 4: bob's own message stays for her
        await ds.advanceCursor({ device: bob, groupId, seq: 5 });
        expect((await ds.purge({ now: NOW + DAY, logTtlMs: DAY / 2 })).logEntries).to.equal(1);
        expect((await ds.read({ groupId, afterSeq: 0, limit: 10 })).map((e) => e.seq)).to.deep.equal([5]);
      });
    });
  });
}

describe("delivery service: the epoch a group starts at", () => {
  it("is the epoch a fresh ts-mls group reports", async () => {
    const cs = await getCiphersuiteImpl(getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
    const credential = { credentialType: "basic" as const, identity: bytes("alice") };
    const keyPackage = await generateKeyPackage(credential, defaultCapabilities(), defaultLifetime, [], cs);
    const state = await createMlsGroup(newGroupId(), keyPackage.publicPackage, keyPackage.privatePackage, [], cs);
    expect(state.groupContext.epoch).to.equal(BigInt(INITIAL_EPOCH));
  });
});

deliveryServiceContract("memory", async () => {
  const store = createMemoryDeliveryServiceStore();
  await store.migrate();
  return { one: store, two: store };
});

describe("delivery service in a file", function () {
  const dirs: string[] = [];
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });
  deliveryServiceContract("file", async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "chat-ds-"));
    dirs.push(dir);
    const store = createFileDeliveryServiceStore({ dir });
    await store.migrate();
    return { one: store, two: store };
  });
});

describe("delivery service on MySQL", function () {
  let db: TestDatabase;
  let pools: Pool[] = [];
  before(async () => {
    db = await createTestDatabase("chat_ds");
    pools = [createTestPool(db.url), createTestPool(db.url)];
  });
  after(async () => {
    await Promise.all(pools.map((p) => p.end()));
    await db?.drop();
  });

  // Batches of appends go to one of two procedures by their shape; the contract holds for each alone.
  for (const [name, setBasedBatches] of [["mysql", "never"], ["mysql, set-based batches", "always"]] as const) {
    deliveryServiceContract(name, async () => {
      for (const table of ["ds_key_package_owners", "ds_devices", "ds_key_packages", "ds_last_resort_key_packages", "ds_groups", "ds_members", "ds_log", "ds_welcomes"]) {
        await pools[0].query(`DROP TABLE IF EXISTS ${table}`);
      }
      const one = createMysqlDeliveryServiceStore(pools[0], undefined, { setBasedBatches });
      await one.migrate();
      await one.migrate(); // idempotent
      const two = createMysqlDeliveryServiceStore(pools[1], undefined, { setBasedBatches });
      await two.migrate(); // a second instance starting against the same tables
      return { one, two };
    });
  }

  it("keeps bytes binary: the log's group id and message columns are BINARY/BLOB", async () => {
    await createMysqlDeliveryServiceStore(pools[0]).migrate();
    const [columns] = await pools[0].query<RowDataPacket[]>(
      "SELECT TABLE_NAME AS t, COLUMN_NAME AS c, DATA_TYPE AS d FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME IN ('group_id', 'bytes', 'id') AND TABLE_NAME IN ('ds_log', 'ds_groups')",
    );
    const types = Object.fromEntries(columns.map((r) => [`${r.t}.${r.c}`, r.d]));
    expect(types).to.deep.equal({ "ds_groups.id": "binary", "ds_log.group_id": "binary", "ds_log.bytes": "mediumblob" });
  });
});

/** A real MySQL user with only `grants` on a database of its own (dropped after), and two pools as that user. */
function useRestrictedDatabase(prefix: string, grants: string): { pools: Pool[] } {
  const state: { pools: Pool[] } = { pools: [] };
  let db: TestDatabase | undefined;
  const account = `${prefix}_${randomBytes(4).toString("hex")}`;
  const asAdmin = async (sql: string, values: unknown[] = []) => {
    const admin = await mysql.createConnection(MYSQL_ADMIN_URL);
    try {
      await admin.query(sql, values);
    } finally {
      await admin.end();
    }
  };
  before(async () => {
    db = await createTestDatabase(prefix);
    const password = randomBytes(12).toString("hex");
    await asAdmin("CREATE USER ?@'127.0.0.1' IDENTIFIED BY ?", [account, password]);
    await asAdmin(`GRANT ${grants} ON \`${db.name}\`.* TO ?@'127.0.0.1'`, [account]);
    const url = new URL(db.url);
    url.hostname = "127.0.0.1";
    url.username = account;
    url.password = password;
    state.pools = [createTestPool(url.toString()), createTestPool(url.toString())];
  });
  after(async () => {
    await Promise.all(state.pools.map((p) => p.end()));
    await asAdmin("DROP USER IF EXISTS ?@'127.0.0.1'", [account]);
    await db?.drop();
  });
  return state;
}

describe("delivery service on MySQL without stored procedures", function () {
  // A relay whose MySQL user may not create routines runs the same steps as plain statements: a real
  // user without CREATE ROUTINE, on a database of its own where no routine exists yet.
  const restricted = useRestrictedDatabase("chat_ds_plain", "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER");
  const reasons: string[] = [];

  deliveryServiceContract("mysql, plain statements", async () => {
    for (const table of ["ds_key_package_owners", "ds_devices", "ds_key_packages", "ds_last_resort_key_packages", "ds_groups", "ds_members", "ds_log", "ds_welcomes"]) {
      await restricted.pools[0].query(`DROP TABLE IF EXISTS ${table}`);
    }
    reasons.length = 0;
    const one = createMysqlDeliveryServiceStore(restricted.pools[0], (reason) => reasons.push(reason));
    await one.migrate();
    const two = createMysqlDeliveryServiceStore(restricted.pools[1], (reason) => reasons.push(reason));
    await two.migrate();
    expect(reasons, "both stores run without routines").to.have.length(2);
    const [routines] = await restricted.pools[0].query<RowDataPacket[]>("SELECT COUNT(*) AS n FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()");
    expect(Number(routines[0].n)).to.equal(0);
    return { one, two };
  });
});

describe("delivery service on MySQL without the right to create temporary tables", function () {
  // The set-based batch procedure keeps its items in temporary tables: a user who may create routines but
  // not temporary tables gets every batch from the loop procedure, and is told so once.
  const restricted = useRestrictedDatabase("chat_ds_notemp", "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER, CREATE ROUTINE, ALTER ROUTINE, EXECUTE");

  it("stores a batch that would go to the set-based procedure through the loop, with every verdict", async () => {
    const reasons: string[] = [];
    const store = createMysqlDeliveryServiceStore(restricted.pools[0], undefined, { setBasedBatches: "always", onSetBasedUnavailable: (reason) => reasons.push(reason) });
    await store.migrate();
    expect(reasons, "told once, at migrate").to.have.length(1);
    const groups = Array.from({ length: 10 }, newGroupId);
    for (const groupId of groups) await store.createGroup({ groupId, members: [alice, bob], now: NOW });
    const before = store.appendBatchStats!();
    const results = await Promise.all(
      groups.flatMap((groupId, i) => [alice, bob].map((sender) => store.appendApplication({ groupId, epoch: 0, sender, messageId: `${sender.username}-${i}`, bytes: bytes(`${i}`), receivedAt: NOW }))),
    );
    expect(store.appendBatchStats!().flushes - before.flushes, "one batch").to.equal(1);
    expect(results.map((r) => r.accepted && r.seq)).to.deep.equal(groups.flatMap(() => [1, 2]));
    const page = await store.readAsMember({ device: bob, groupId: groups[9], afterSeq: 0, limit: 10 });
    expect(page.entries.map((e) => [e.messageId, text(e.bytes)])).to.deep.equal([["alice-9", "9"], ["bob-9", "9"]]);
  });
});
