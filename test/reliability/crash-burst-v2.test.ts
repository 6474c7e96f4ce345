/**
 * Fault, messages v2 (MLS): the relay process is SIGKILLed in the middle of a burst of 300 messages among
 * 10 users (five one-to-one chats and one group of 5), once for each Delivery Service store: MySQL
 * (MYSQL_URL), and the file store of a relay without MySQL (DATA_DIR/ds, the same folder kept across the
 * kill and the restart). Every user is one MLS device made of the CLI's own client code (MlsDevice over a
 * DsClient, credentials checked against the chain); senders keep each unaccepted message in an outbox with
 * its first id and time. Half of the users (the even ones, one in each one-to-one chat) hold the relay's
 * WebSocket as `chat talk` does: their messages go as append frames, answered once durable, and an append
 * the socket cannot settle goes over HTTP with the same id; their sockets ask for early frames, and the
 * messages those carry are shown at once and passed over when met in the log; the other half send and read
 * over HTTP. The kill is timed to catch, with certainty, two group members in the middle of a commit (one
 * whose commit the relay stored but whose answer was lost, one whose commit never reached it), one more
 * message stored but unanswered over HTTP, and one stored but unanswered on a socket. After the restart
 * every device is opened again from its home (a new `chat` process, with a new socket for the socket half),
 * syncs, and re-sends its outbox.
 * Asserted: the socket half's messages went as append frames before the kill, and messages were shown from
 * early frames before it; every message of either half is shown exactly once to each recipient
 * (after the history's check by payload id), no log entry is refused (none is applied twice), each group's
 * log on the relay holds each payload id once, every id remembered from an early frame was met in the log
 * (but a re-send's, of a message read already), and the group's members end in one epoch.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import {
  countDeliveries,
  killMidway,
  MlsParticipant,
  notShownOnce,
  planMessages,
  readRelayLog,
  relayLogCounts,
  relayMessageId,
  runBurst,
  startAnswerCuttingProxy,
  startSocketAnswerHolder,
  startConversations,
  syncUntilDelivered,
  drainOutboxes,
  type AnswerCuttingProxy,
  type OutgoingMessage,
} from "../helpers/mls-burst";
import { loginDeviceOwner, openMlsDevice } from "../helpers/mls-device";
import { openRelaySocket, type RelaySocket } from "../helpers/mls-socket";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { waitFor } from "../helpers/wait";
import { newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain } from "./stack";

const USERS = 10;
/** messages each member writes in its one-to-one chat, and in the group */
const PAIR_MESSAGES = 24;
const GROUP_MESSAGES = 12;
/** 10 x 24 + 5 x 12 */
const MESSAGES = 300;
const KILL_AFTER_ACCEPTED = 150;
/** the burst's messages and the two written to have their answers lost */
const WRITTEN = MESSAGES + 2;
/** users whose device holds the relay's WebSocket (one in each one-to-one chat, three of the group) */
const onSocket = (i: number) => i % 2 === 0;

const STORES = [
  { name: "the MySQL store", mysql: true },
  { name: "the file store (no MYSQL_URL: DATA_DIR/ds, kept across the kill)", mysql: false },
];

for (const store of STORES) describeCrashBurstV2(store);

function describeCrashBurstV2({ name, mysql }: { name: string; mysql: boolean }) {
  describe(`fault, messages v2: the relay is SIGKILLed in the middle of a ${MESSAGES}-message MLS burst (five 1:1 chats and a group of 5), ${name}`, function () {
    // About 40 s on a quiet 2-core machine; several times that when other suites share it.
    this.timeout(300_000);
    let chain: Chain;
    let db: TestDatabase | undefined;
    let relay: RelayProcess | undefined;
    let reader: ChainReader | undefined;
    const cuts: AnswerCuttingProxy[] = [];
    /** each socket user's sockets, the first before the kill and the next after the restart */
    const sockets = new Map<number, RelaySocket[]>();
    let tmp: string;

    before(async () => {
      chain = await startChain();
      if (mysql) db = await createTestDatabase("chat_rel_crash_v2");
      tmp = mkdtempSync(path.join(os.tmpdir(), "chat-crash-v2-"));
    });

    after(async () => {
      for (const list of sockets.values()) for (const s of list) s.close();
      for (const cut of cuts) await cut.close();
      await relay?.stop();
      reader?.close();
      await chain?.anvil.stop();
      await db?.drop();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
    });

    it("shows every message once, re-sends the unaccepted ones from the outbox, and the mid-commit members end in the group's epoch", async () => {
      const started = Date.now();
      const options = relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), mysqlUrl: db?.url, env: { INSECURE_HTTP: "1" } });
      relay = await startRelayProcess(options);
      const users = Array.from({ length: USERS }, (_, i) => newTestUser(`mls_crash_${String(i).padStart(2, "0")}`));
      await registerUsers(relay, chain.domain, users);
      reader = await ChainReader.connect(chain.anvil.url);
      // Three devices reach the relay through proxies that can cut one answer (they follow the relay's fixed
      // port): the adopter, whose commit will be stored unanswered, and the losers of one message's answer,
      // over HTTP and on the socket (its socket goes through the proxy, its HTTP requests do not).
      const roles = { adopter: 3, abandoner: 7, lostAnswer: 1, socketLostAnswer: 6 };
      const adopterCut = await startAnswerCuttingProxy(() => relay!.port);
      const messageCut = await startAnswerCuttingProxy(() => relay!.port);
      const socketCut = await startSocketAnswerHolder(() => relay!.port);
      cuts.push(adopterCut, messageCut, socketCut);
      const participants: MlsParticipant[] = [];
      for (const [i, user] of users.entries()) {
        const owner = await loginDeviceOwner({ relayUrl: relay.url, domain: chain.domain, user, home: path.join(tmp, user.username) });
        const relayUrl = i === roles.adopter ? adopterCut.url : i === roles.lostAnswer ? messageCut.url : relay.url;
        const open = { owner, relayUrl, chainId: chain.deployed.chainId, contract: chain.deployed.address, reader: reader! };
        const participant: MlsParticipant = new MlsParticipant(owner, async (deliver) => {
          if (!onSocket(i)) return openMlsDevice({ ...open, deliver });
          // Each opening, as each `chat talk`, holds a new socket (the one before the kill died with the relay),
          // and shows the messages its early frames carry.
          const socket = await openRelaySocket(i === roles.socketLostAnswer ? socketCut.url : relay!.url, owner.token, { early: true });
          socket.onEarly = (frame) => participant.applyEarly(frame);
          sockets.set(i, [...(sockets.get(i) ?? []), socket]);
          return openMlsDevice({ ...open, deliver, socket: socket.appends });
        });
        participants.push(participant);
      }
      for (const p of participants) await p.open();
      const [adopter, abandoner] = [participants[roles.adopter], participants[roles.abandoner]];
      const { pairs, group } = await startConversations(participants, [0, 3, 4, 7, 8].map((i) => participants[i]));
      const conversations = [...pairs, group];
      const plan = planMessages(conversations, (c) => (c === group ? GROUP_MESSAGES : PAIR_MESSAGES));
      expect([...plan.values()].reduce((n, list) => n + list.length, 0)).to.equal(MESSAGES);
      const setupMs = Date.now() - started;

      // --- the burst, and the kill with two members mid-commit -------------------------------------------
      const accepted = new Set<string>();
      let killed = false;
      let arm!: () => void;
      const armed = new Promise<void>((resolve) => (arm = resolve));
      const onAccepted = (m: OutgoingMessage) => {
        accepted.add(m.id);
        if (accepted.size >= KILL_AFTER_ACCEPTED) arm();
      };
      for (const p of participants) p.onAccepted = onAccepted;
      const burstStarted = Date.now();
      let updatesBeforeKill = 0;
      let earlyAppliedBeforeKill = 0;
      const [midway, written] = await Promise.all([
        killMidway({
          armed,
          groupId: group.groupId,
          adopter,
          adopterCut,
          abandoner,
          lostAnswer: { participant: participants[roles.lostAnswer], cut: messageCut, groupId: pairs[0].groupId },
          socketLostAnswer: { participant: participants[roles.socketLostAnswer], cut: socketCut, groupId: pairs[3].groupId },
          kill: async () => {
            await relay!.kill();
            killed = true;
            earlyAppliedBeforeKill = participants.reduce((n, p) => n + p.earlyApplied, 0);
          },
        }),
        runBurst({
          participants,
          plan,
          syncEvery: 4,
          // The adopter moves the group's epoch now and then, so others' messages race commits.
          afterWrite: async (p, n) => {
            if (p === adopter && n % 3 === 2 && !killed && (await p.updateKeys(group.groupId))) updatesBeforeKill++;
          },
        }),
      ]);
      const burstMs = Date.now() - burstStarted;
      // The messages whose answers were lost were written too (and not accepted, as far as their senders know).
      const lostAnswer = midway.lostAnswer!;
      const socketLostAnswer = midway.socketLostAnswer!;
      for (const lost of [lostAnswer, socketLostAnswer]) {
        expect(lost.accepted, lost.message.body).to.equal(false);
        written.set(lost.message.id, lost.message);
      }
      expect(relay.process.signalCode).to.equal("SIGKILL");
      const acceptedBeforeKill = new Set(accepted);
      const waiting = participants.reduce((n, p) => n + p.outbox.length, 0);
      expect(written.size).to.equal(WRITTEN);
      expect(acceptedBeforeKill.size).to.be.at.least(KILL_AFTER_ACCEPTED);
      expect(waiting, "messages not accepted stay in the outboxes").to.be.greaterThan(0);
      expect(acceptedBeforeKill.size + waiting).to.equal(WRITTEN);
      expect(participants[roles.lostAnswer].outbox.map((m) => m.id)).to.include(lostAnswer.message.id);
      expect(participants[roles.socketLostAnswer].outbox.map((m) => m.id)).to.include(socketLostAnswer.message.id);

      // --- the socket half sent as append frames, and its sockets died with the relay ----------------------
      const socketUsers = participants.map((_, i) => i).filter(onSocket);
      const firstSockets = socketUsers.map((i) => sockets.get(i)!);
      expect(firstSockets.map((list) => list.length)).to.deep.equal(socketUsers.map(() => 1));
      const beforeKill = firstSockets.map(([s]) => s.counts);
      for (const [k, counts] of beforeKill.entries()) {
        expect(counts.stored, `${participants[socketUsers[k]].username}'s messages answered on its socket`).to.be.greaterThan(0);
        expect(counts.frames).to.be.at.least(counts.stored);
      }
      for (const [s] of firstSockets) await waitFor("the socket to close with the relay", () => !s.open, 10_000, 20);
      // The append whose answer was held was given up by the socket when it closed, and went over HTTP
      // with the same id (the relay was dead: it stays in the outbox).
      const heldSocket = sockets.get(roles.socketLostAnswer)![0];
      expect(heldSocket.counts.unavailable.closed ?? 0, "appends the dead socket gave up to HTTP").to.be.at.least(1);
      const byHalf = (socket: boolean) => new Set([...written.values()].filter((m) => onSocket(participants.findIndex((p) => p.username === m.from)) === socket).map((m) => m.id));
      const [socketWritten, httpWritten] = [byHalf(true), byHalf(false)];
      const acceptedOnSocketHalf = [...acceptedBeforeKill].filter((id) => socketWritten.has(id)).length;
      // Messages were shown from early frames, before their log entries, while the relay lived.
      expect(earlyAppliedBeforeKill, "messages shown from early frames before the kill").to.be.greaterThan(0);
      expect(acceptedOnSocketHalf).to.be.greaterThan(0);
      expect(acceptedBeforeKill.size - acceptedOnSocketHalf).to.be.greaterThan(0);
      // Both members were in the middle of a commit: saved as pending, no answer.
      expect(midway.adopter.error).to.equal("RELAY_UNREACHABLE");
      expect(midway.abandoner.error).to.equal("RELAY_UNREACHABLE");
      expect(adopter.groupFile(group.groupId)?.pending?.id).to.equal(midway.adopter.pending?.id).and.to.be.a("string");
      expect(abandoner.groupFile(group.groupId)?.pending?.id).to.equal(midway.abandoner.pending?.id).and.to.be.a("string");

      // --- restart on the same address, same database or DATA_DIR; every device opened again from its home ---
      const restartStarted = Date.now();
      relay = await startRelayProcess({ ...options, port: relay.port });
      const restartMs = Date.now() - restartStarted;
      for (const p of participants) await p.open();
      for (const i of socketUsers) {
        const list = sockets.get(i)!;
        expect(list.length, "a new socket after the restart").to.equal(2);
        expect(list[1].open).to.equal(true);
      }
      await Promise.all(participants.map((p) => p.sync()));
      const resentStarted = Date.now();
      let resent = 0;
      for (const p of participants) p.onAccepted = () => resent++;
      await drainOutboxes(participants);
      await syncUntilDelivered(participants, conversations, written);
      const recoveryMs = Date.now() - resentStarted;

      // --- the mid-commit members: one epoch for the whole group ----------------------------------------
      const log = await readRelayLog(participants[0].ds, group.groupId);
      // The adopter's commit was stored before the kill, and adopted from its echo in the log.
      expect(log.handshakes.get(midway.adopter.pending!.id), "the cut commit is in the relay's log").to.equal(1);
      expect(adopter.groupFile(group.groupId)?.pending).to.equal(undefined);
      // The abandoner's never reached the relay.
      expect(log.handshakes.has(midway.abandoner.pending!.id)).to.equal(false);
      const members = group.members.map((u) => participants.find((p) => p.username === u)!);
      const epochs = members.map((p) => p.device.epoch(group.groupId));
      expect(new Set(epochs).size, `epochs ${epochs}`).to.equal(1);
      expect(epochs[0]).to.equal(log.epoch);
      // The abandoner's state is sound: its next commit is accepted, and everyone follows.
      expect(await abandoner.updateKeys(group.groupId)).to.equal(true);
      await Promise.all(members.map((p) => p.sync()));
      const after = members.map((p) => p.device.epoch(group.groupId));
      expect(after).to.deep.equal(members.map(() => log.epoch + 1));

      // --- count: shown to each recipient, and held by the relay -----------------------------------------
      // The relay answered each lost answer's re-send as a duplicate (and maybe others that were in flight);
      // the socket user's re-send went on its new socket.
      const resendsAlreadyStored = participants.reduce((n, p) => n + p.ds.applications.duplicates, 0);
      expect(participants[roles.lostAnswer].ds.applications.duplicates).to.be.at.least(1);
      expect(participants[roles.socketLostAnswer].ds.applications.duplicates).to.be.at.least(1);
      expect(resendsAlreadyStored).to.be.at.least(2);
      const afterRestart = socketUsers.map((i) => sockets.get(i)![1].counts);
      expect(sockets.get(roles.socketLostAnswer)![1].counts.frames, "the re-sends went as append frames on the new socket").to.be.at.least(1);
      const counts = countDeliveries(participants, conversations, written);
      expect(counts.wrong).to.deep.equal([]);
      const acceptedNotOnce = notShownOnce(counts, conversations, written, acceptedBeforeKill);
      const socketHalfNotOnce = notShownOnce(counts, conversations, written, socketWritten);
      const httpHalfNotOnce = notShownOnce(counts, conversations, written, httpWritten);
      const held = await relayLogCounts(participants, conversations, written);
      const figures = {
        store: mysql ? "mysql" : "file",
        written: written.size,
        accepted_before_kill: acceptedBeforeKill.size,
        waiting_in_outboxes_after_kill: waiting,
        resent_after_restart: resent,
        resends_already_stored: resendsAlreadyStored,
        application_epoch_conflicts_after_restart: participants.reduce((n, p) => n + p.ds.applications.epochConflicts, 0),
        key_updates_before_kill: updatesBeforeKill,
        accepted_before_kill_socket_half: acceptedOnSocketHalf,
        socket_appends_before_kill: sum(beforeKill),
        socket_appends_after_restart: sum(afterRestart),
        early_applied_before_kill: earlyAppliedBeforeKill,
        early_applied: participants.reduce((n, p) => n + p.earlyApplied, 0),
        early_dropped: participants.reduce((n, p) => n + p.earlyDropped, 0),
        refused_entries: participants.reduce((n, p) => n + p.refused.length, 0),
        deliveries_expected: counts.expected,
        lost: counts.lost,
        shown_twice: counts.shownTwice,
        redelivered_dropped_by_history: participants.reduce((n, p) => n + p.redelivered, 0),
        relay_log_copies: held.copies,
        relay_log_duplicates: held.duplicates,
        relay_log_unknown: held.unknown,
        unreachable_errors: participants.reduce((n, p) => n + p.unreachable, 0),
        group_epoch: log.epoch,
        setup_ms: setupMs,
        burst_ms: burstMs,
        restart_ms: restartMs,
        recovery_ms: recoveryMs,
        total_ms: Date.now() - started,
      };
      console.log(`      crash-burst v2: ${JSON.stringify(figures)}`);
      expect(acceptedNotOnce, "accepted messages not shown exactly once").to.deep.equal([]);
      expect(socketHalfNotOnce, "messages of the socket half not shown exactly once").to.deep.equal([]);
      expect(httpHalfNotOnce, "messages of the HTTP half not shown exactly once").to.deep.equal([]);
      expect(counts.lost).to.equal(0);
      expect(counts.shownTwice).to.equal(0);
      expect(held.notOnce, "payload ids not held exactly once by the relay").to.deep.equal([]);
      expect(held.copies).to.equal(WRITTEN);
      expect(held.unknown).to.equal(0);
      expect(resent).to.equal(waiting);
      // Applying early frames never failed, and no log entry was applied a second time (it would have been
      // refused). Every id remembered from an early frame was met in the log and passed over, but that of a
      // re-send of a message read already (the relay hands a re-send on before it finds the id stored): its
      // second showing was dropped by the history.
      expect(participants.flatMap((p) => p.earlyErrors.map(String))).to.deep.equal([]);
      expect(participants.flatMap((p) => p.refused)).to.deep.equal([]);
      const neverMet = participants.flatMap((p) =>
        conversations
          .filter((c) => c.members.includes(p.username))
          .flatMap((c) => p.groupFile(c.groupId)?.early ?? [])
          .filter((id) => ![...p.redeliveredIds].some((payloadId) => relayMessageId(payloadId) === id))
          .map((id) => `${p.username} ${id}`),
      );
      expect(neverMet, "early ids never met in the log, of messages shown once").to.deep.equal([]);
    });
  });
}

/** Socket append counts of several sockets, added up (the reasons the socket gave appends up, by reason). */
function sum(all: RelaySocket["counts"][]) {
  const total = { frames: 0, cursorFrames: 0, stored: 0, duplicates: 0, epochConflicts: 0, unavailable: {} as Record<string, number> };
  for (const c of all) {
    total.frames += c.frames;
    total.cursorFrames += c.cursorFrames;
    total.stored += c.stored;
    total.duplicates += c.duplicates;
    total.epochConflicts += c.epochConflicts;
    for (const [reason, n] of Object.entries(c.unavailable)) total.unavailable[reason] = (total.unavailable[reason] ?? 0) + (n ?? 0);
  }
  return total;
}
