/**
 * Fault, messages v2 (MLS): the relay process is SIGKILLed in the middle of a burst of 300 messages among
 * 10 users (five one-to-one chats and one group of 5), once for each Delivery Service store: MySQL
 * (MYSQL_URL), and the file store of a relay without MySQL (DATA_DIR/ds, the same folder kept across the
 * kill and the restart). Every user is one MLS device made of the CLI's own client code (MlsDevice over a
 * DsClient, credentials checked against the chain); senders keep each unaccepted message in an outbox with
 * its first id and time. The kill is timed to catch, with certainty, two group members in the middle of a
 * commit (one whose commit the relay stored but whose answer was lost, one whose commit never reached it)
 * and one more message stored but unanswered. After the restart every device
 * is opened again from its home (a new `chat` process), syncs, and re-sends its outbox.
 * Asserted: every message is shown exactly once to each recipient (after the history's check by payload id),
 * each group's log on the relay holds each payload id once, and the group's members end in one epoch.
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
  runBurst,
  startAnswerCuttingProxy,
  startConversations,
  syncUntilDelivered,
  drainOutboxes,
  type AnswerCuttingProxy,
  type OutgoingMessage,
} from "../helpers/mls-burst";
import { loginDeviceOwner, openMlsDevice } from "../helpers/mls-device";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain } from "./stack";

const USERS = 10;
/** messages each member writes in its one-to-one chat, and in the group */
const PAIR_MESSAGES = 24;
const GROUP_MESSAGES = 12;
/** 10 x 24 + 5 x 12 */
const MESSAGES = 300;
const KILL_AFTER_ACCEPTED = 150;

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
    let tmp: string;

    before(async () => {
      chain = await startChain();
      if (mysql) db = await createTestDatabase("chat_rel_crash_v2");
      tmp = mkdtempSync(path.join(os.tmpdir(), "chat-crash-v2-"));
    });

    after(async () => {
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
      // Two devices reach the relay through proxies that can cut one answer (they follow the relay's fixed
      // port): the adopter, whose commit will be stored unanswered, and the loser of one message's answer.
      const roles = { adopter: 3, abandoner: 7, lostAnswer: 1 };
      const adopterCut = await startAnswerCuttingProxy(() => relay!.port);
      const messageCut = await startAnswerCuttingProxy(() => relay!.port);
      cuts.push(adopterCut, messageCut);
      const participants: MlsParticipant[] = [];
      for (const [i, user] of users.entries()) {
        const owner = await loginDeviceOwner({ relayUrl: relay.url, domain: chain.domain, user, home: path.join(tmp, user.username) });
        const relayUrl = i === roles.adopter ? adopterCut.url : i === roles.lostAnswer ? messageCut.url : relay.url;
        participants.push(
          new MlsParticipant(owner, (deliver) =>
            openMlsDevice({ owner, relayUrl, chainId: chain.deployed.chainId, contract: chain.deployed.address, reader: reader!, deliver }),
          ),
        );
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
      const [midway, written] = await Promise.all([
        killMidway({
          armed,
          groupId: group.groupId,
          adopter,
          adopterCut,
          abandoner,
          lostAnswer: { participant: participants[roles.lostAnswer], cut: messageCut, groupId: pairs[0].groupId },
          kill: async () => {
            await relay!.kill();
            killed = true;
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
      // The message whose answer was lost was written too (and not accepted, as far as its sender knows).
      const lostAnswer = midway.lostAnswer!;
      expect(lostAnswer.accepted).to.equal(false);
      written.set(lostAnswer.message.id, lostAnswer.message);
      expect(relay.process.signalCode).to.equal("SIGKILL");
      const acceptedBeforeKill = new Set(accepted);
      const waiting = participants.reduce((n, p) => n + p.outbox.length, 0);
      expect(written.size).to.equal(MESSAGES + 1);
      expect(acceptedBeforeKill.size).to.be.at.least(KILL_AFTER_ACCEPTED);
      expect(waiting, "messages not accepted stay in the outboxes").to.be.greaterThan(0);
      expect(acceptedBeforeKill.size + waiting).to.equal(MESSAGES + 1);
      expect(participants[roles.lostAnswer].outbox.map((m) => m.id)).to.include(lostAnswer.message.id);
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
      // The relay answered the lost answer's re-send as a duplicate (and maybe others that were in flight).
      const resendsAlreadyStored = participants.reduce((n, p) => n + p.ds.applications.duplicates, 0);
      expect(resendsAlreadyStored).to.be.at.least(1);
      const counts = countDeliveries(participants, conversations, written);
      expect(counts.wrong).to.deep.equal([]);
      const acceptedNotOnce = notShownOnce(counts, conversations, written, acceptedBeforeKill);
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
      expect(counts.lost).to.equal(0);
      expect(counts.shownTwice).to.equal(0);
      expect(held.notOnce, "payload ids not held exactly once by the relay").to.deep.equal([]);
      expect(held.copies).to.equal(MESSAGES + 1);
      expect(held.unknown).to.equal(0);
      expect(resent).to.equal(waiting);
    });
  });
}
