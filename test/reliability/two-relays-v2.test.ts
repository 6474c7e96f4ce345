/**
 * Fault, messages v2 (MLS): two relays share MariaDB and Redis behind a TCP load balancer, and one is
 * SIGKILLed in the middle of a burst of 300 messages among 10 users (five one-to-one chats and a group of
 * 5). Half the devices reach the relays through the balancer (which sends them to the relay that dies),
 * half reach the other relay directly. Every user is one MLS device made of the CLI's own client code,
 * kept open throughout, as a long-running client would: what the relay does not accept stays in its outbox
 * and is re-sent on the next write, through the balancer to the surviving relay. The kill is timed to
 * catch one group member's commit stored and unanswered, another's built before the kill and offered only
 * after it (through the survivor; rebuilt if it lost its epoch), and one message stored and unanswered.
 * Asserted: every message is shown exactly once to each recipient (after the history's check by payload
 * id), each group's log holds each payload id once, and the group's members end in one epoch.
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import {
  countDeliveries,
  drainOutboxes,
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
  type AnswerCuttingProxy,
  type OutgoingMessage,
} from "../helpers/mls-burst";
import { loginDeviceOwner, openMlsDevice } from "../helpers/mls-device";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, registerUsers, relayOptions, relaySecrets, startChain, startTcpProxy, type Chain, type TcpProxy } from "./stack";

const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const USERS = 10;
const PAIR_MESSAGES = 24;
const GROUP_MESSAGES = 12;
/** 10 x 24 + 5 x 12 */
const MESSAGES = 300;
const KILL_AFTER_ACCEPTED = 150;

describe(`fault, messages v2: two relays with Redis, one is SIGKILLed in the middle of a ${MESSAGES}-message MLS burst`, function () {
  // About 40 s on a quiet 2-core machine; several times that when other suites share it.
  this.timeout(300_000);
  let chain: Chain;
  let db: TestDatabase;
  let tmp: string;
  let reader: ChainReader | undefined;
  const relays: RelayProcess[] = [];
  const proxies: (TcpProxy | AnswerCuttingProxy)[] = [];

  before(async () => {
    chain = await startChain();
    db = await createTestDatabase("chat_rel_two_v2");
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-two-v2-"));
  });
  after(async () => {
    for (const proxy of proxies) await proxy.close();
    for (const relay of relays) await relay.stop();
    reader?.close();
    await chain?.anvil.stop();
    await db?.drop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("the devices of the killed relay go on through the other; nothing is lost or shown twice, and the group keeps one epoch", async () => {
    const started = Date.now();
    const options = relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), mysqlUrl: db.url, redisUrl: REDIS_URL, env: { INSECURE_HTTP: "1" } });
    const doomed = await startRelayProcess(options);
    relays.push(doomed);
    const survivor = await startRelayProcess(options);
    relays.push(survivor);
    // The balancer sends each connection to the first relay that accepts: the doomed one while it lives.
    const balancer = await startTcpProxy(() => [doomed.port, survivor.port]);
    const adopterCut = await startAnswerCuttingProxy(() => balancer.port);
    const messageCut = await startAnswerCuttingProxy(() => balancer.port);
    proxies.push(adopterCut, messageCut, balancer);
    const balancerUrl = balancer.url("http");

    const users = Array.from({ length: USERS }, (_, i) => newTestUser(`mls_two_${String(i).padStart(2, "0")}`));
    await registerUsers(doomed, chain.domain, users);
    reader = await ChainReader.connect(chain.anvil.url);
    const roles = { adopter: 3, abandoner: 7, lostAnswer: 1 };
    const participants: MlsParticipant[] = [];
    const viaBalancer = new Set<number>();
    for (const [i, user] of users.entries()) {
      // Even users and the three with a role go through the balancer; the others straight to the survivor.
      const relayUrl = i === roles.adopter ? adopterCut.url : i === roles.lostAnswer ? messageCut.url : i % 2 === 0 || i === roles.abandoner ? balancerUrl : survivor.url;
      if (relayUrl !== survivor.url) viaBalancer.add(i);
      const owner = await loginDeviceOwner({ relayUrl, domain: chain.domain, user, home: path.join(tmp, user.username) });
      participants.push(
        new MlsParticipant(owner, (deliver) => openMlsDevice({ owner, relayUrl, chainId: chain.deployed.chainId, contract: chain.deployed.address, reader: reader!, deliver })),
      );
    }
    for (const p of participants) await p.open();
    const [adopter, abandoner] = [participants[roles.adopter], participants[roles.abandoner]];
    const { pairs, group } = await startConversations(participants, [0, 3, 4, 7, 8].map((i) => participants[i]));
    const conversations = [...pairs, group];
    const plan = planMessages(conversations, (c) => (c === group ? GROUP_MESSAGES : PAIR_MESSAGES));
    expect([...plan.values()].reduce((n, list) => n + list.length, 0)).to.equal(MESSAGES);
    const setupMs = Date.now() - started;

    // --- the burst; the doomed relay dies with work in the middle of it; the clients go on ------------------
    const acceptedBeforeKill = new Set<string>();
    const acceptedAfterKill = new Set<string>();
    let killed = false;
    let arm!: () => void;
    const armed = new Promise<void>((resolve) => (arm = resolve));
    const onAccepted = (m: OutgoingMessage) => {
      (killed ? acceptedAfterKill : acceptedBeforeKill).add(m.id);
      if (acceptedBeforeKill.size >= KILL_AFTER_ACCEPTED) arm();
    };
    for (const p of participants) p.onAccepted = onAccepted;
    const epochBefore = participants[0].device.epoch(group.groupId);
    const burstStarted = Date.now();
    let killedAtMs = 0;
    const [midway, written] = await Promise.all([
      killMidway({
        armed,
        groupId: group.groupId,
        adopter,
        adopterCut,
        abandoner,
        lostAnswer: { participant: participants[roles.lostAnswer], cut: messageCut, groupId: pairs[0].groupId },
        kill: async () => {
          await doomed.kill();
          killed = true;
          killedAtMs = Date.now() - burstStarted;
        },
      }),
      runBurst({
        participants,
        plan,
        syncEvery: 4,
        afterWrite: async (p, n) => {
          if (p === adopter && n % 3 === 2) await p.updateKeys(group.groupId);
        },
      }),
    ]);
    expect(doomed.process.signalCode).to.equal("SIGKILL");
    const lostAnswer = midway.lostAnswer!;
    written.set(lostAnswer.message.id, lostAnswer.message);
    // The clients re-send what is left in their outboxes (the one with the lost answer among them).
    await drainOutboxes(participants);
    await syncUntilDelivered(participants, conversations, written);
    const burstMs = Date.now() - burstStarted;

    // --- the group: the cut commit was adopted from its echo, the held one lost its epoch and was rebuilt ---
    expect(midway.adopter.error).to.equal("RELAY_UNREACHABLE");
    expect(midway.adopter.pending).to.not.equal(undefined);
    expect(midway.abandoner.pending).to.not.equal(undefined);
    expect(midway.abandoner.error, "the held commit goes through the survivor").to.equal(undefined);
    const log = await readRelayLog(participants[0].ds, group.groupId);
    expect(log.handshakes.get(midway.adopter.pending!.id), "the cut commit is in the log").to.equal(1);
    expect(adopter.groupFile(group.groupId)?.pending).to.equal(undefined);
    const members = group.members.map((u) => participants.find((p) => p.username === u)!);
    await Promise.all(members.map((p) => p.sync()));
    const epochs = members.map((p) => p.device.epoch(group.groupId));
    expect(new Set(epochs).size, `epochs ${epochs}`).to.equal(1);
    expect(epochs[0]).to.equal(log.epoch);

    // --- count -----------------------------------------------------------------------------------------
    const counts = countDeliveries(participants, conversations, written);
    expect(counts.wrong).to.deep.equal([]);
    const accepted = [...acceptedBeforeKill, ...acceptedAfterKill];
    const acceptedNotOnce = notShownOnce(counts, conversations, written, accepted);
    const held = await relayLogCounts(participants, conversations, written);
    const figures = {
      written: written.size,
      devices_via_balancer: viaBalancer.size,
      accepted_before_kill: acceptedBeforeKill.size,
      accepted_after_kill: acceptedAfterKill.size,
      killed_at_ms: killedAtMs,
      resends_already_stored: participants.reduce((n, p) => n + p.ds.applications.duplicates, 0),
      application_epoch_conflicts: participants.reduce((n, p) => n + p.ds.applications.epochConflicts, 0),
      commit_epoch_conflicts: participants.reduce((n, p) => n + p.ds.commits.epochConflicts, 0),
      deliveries_expected: counts.expected,
      lost: counts.lost,
      shown_twice: counts.shownTwice,
      redelivered_dropped_by_history: participants.reduce((n, p) => n + p.redelivered, 0),
      relay_log_copies: held.copies,
      relay_log_duplicates: held.duplicates,
      relay_log_unknown: held.unknown,
      unreachable_errors: participants.reduce((n, p) => n + p.unreachable, 0),
      group_epoch: log.epoch,
      group_epochs_moved: log.epoch - epochBefore,
      setup_ms: setupMs,
      burst_and_recovery_ms: burstMs,
      total_ms: Date.now() - started,
    };
    console.log(`      two relays v2, one killed: ${JSON.stringify(figures)}`);
    expect(accepted.length).to.equal(MESSAGES + 1);
    expect(acceptedAfterKill.size, "the clients of the dead relay went on through the other").to.be.greaterThan(0);
    expect(participants[roles.lostAnswer].ds.applications.duplicates, "the lost answer's re-send was known to the relay").to.be.at.least(1);
    expect(acceptedNotOnce, "accepted messages not shown exactly once").to.deep.equal([]);
    expect(counts.lost).to.equal(0);
    expect(counts.shownTwice).to.equal(0);
    expect(held.notOnce, "payload ids not held exactly once by the relay").to.deep.equal([]);
    expect(held.copies).to.equal(MESSAGES + 1);
    expect(held.unknown).to.equal(0);
  });
});
