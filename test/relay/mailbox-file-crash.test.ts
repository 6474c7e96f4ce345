/**
 * Fault: the process owning a file mailbox is SIGKILLed in the middle of a burst of puts and acks, three
 * times over the same directory. A real child process (test/helpers/mailbox-file-writer.ts) prints each id
 * only after put() (or ack()) resolved; after each kill the directory is reopened here and every printed
 * id must be there, acknowledged ones as delivered, nothing twice, and the mailbox must take new messages.
 */
import { expect } from "chai";
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { MAX_PENDING_IDS, MailboxError } from "../../relay/storage/mailbox";
import { createFileMailbox, type FileMailboxEvent } from "../../relay/storage/mailbox-file";

const ROOT = path.resolve(__dirname, "../..");
const RECIPIENTS = 5;
const recipientOf = (id: string) => `user${Number(id.slice("crash-".length)) % RECIPIENTS}`;

interface RoundOutcome {
  put: string[];
  acked: string[];
  compactions: number;
}

/** Runs the writer until it has printed `killAfter` puts, checks the lock meanwhile, then SIGKILLs it. */
async function runAndKill(dir: string, from: number, killAfter: number): Promise<RoundOutcome> {
  const child = spawn(process.execPath, ["--import", "tsx", "test/helpers/mailbox-file-writer.ts", dir, String(from), "1000000"], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const outcome: RoundOutcome = { put: [], acked: [], compactions: 0 };
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on("exit", (_code, signal) => resolve(signal)));
  let buffered = "";
  let lockChecked: Promise<void> | undefined;
  await new Promise<void>((resolve, reject) => {
    child.on("exit", () => reject(new Error(`writer exited before the kill: ${stderr}`)));
    child.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const lines = buffered.split("\n");
      buffered = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith("put ")) outcome.put.push(line.slice(4));
        else if (line.startsWith("ack ")) outcome.acked.push(line.slice(4));
        else if (line === "event compacted") outcome.compactions++;
      }
      // While the writer runs, the directory is its own.
      lockChecked ??= createFileMailbox({ dir })
        .migrate()
        .then(
          () => reject(new Error("a second process opened a directory in use")),
          (error: unknown) => {
            expect(error).to.be.instanceOf(MailboxError);
            expect((error as MailboxError).code).to.equal("MAILBOX_LOCKED");
            expect((error as MailboxError).message).to.contain(`process ${child.pid}`);
          },
        );
      if (outcome.put.length >= killAfter) {
        child.kill("SIGKILL");
        resolve();
      }
    });
  });
  // Lines already in the pipe were printed before the kill: they count.
  const signal = await exited;
  for (const line of buffered.split("\n")) {
    if (line.startsWith("put ")) outcome.put.push(line.slice(4));
    else if (line.startsWith("ack ")) outcome.acked.push(line.slice(4));
  }
  expect(signal).to.equal("SIGKILL");
  await lockChecked;
  return outcome;
}

describe("fault: a file mailbox's process is SIGKILLed mid-burst (3 rounds on one directory)", function () {
  let dir: string;
  before(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), "chat-mailbox-crash-"));
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it("every id printed after put()/ack() resolved is there after each kill, nothing twice, and the mailbox goes on", async () => {
    const everPut = new Set<string>();
    const everAcked = new Set<string>();
    const figures = { rounds: 0, putsConfirmed: 0, acksConfirmed: 0, compactions: 0, tornTails: 0, truncatedBytes: 0 };

    for (let round = 0; round < 3; round++) {
      // a different point in the burst each round
      const { put, acked, compactions } = await runAndKill(dir, round * 1_000_000, 1_500 + round * 700);
      put.forEach((id) => everPut.add(id));
      acked.forEach((id) => everAcked.add(id));
      figures.rounds++;
      figures.putsConfirmed += put.length;
      figures.acksConfirmed += acked.length;
      figures.compactions += compactions;

      const events: FileMailboxEvent[] = [];
      const mailbox = createFileMailbox({ dir, onEvent: (e) => events.push(e) });
      await mailbox.migrate(); // the dead writer's lock is taken over
      for (const e of events) {
        if (e.type === "tail-truncated") {
          figures.tornTails++;
          figures.truncatedBytes += e.truncatedBytes;
        }
      }

      // Nothing twice: each recipient's backlog lists each id once, in strictly increasing seq.
      const listed = new Set<string>();
      for (let r = 0; r < RECIPIENTS; r++) {
        const backlog = await mailbox.pending({ recipient: `user${r}`, now: Date.now(), limit: 10_000_000 });
        const seqs = backlog.map((m) => BigInt(m.seq));
        expect(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), `seq order of user${r}`).to.equal(true);
        for (const m of backlog) {
          expect(listed.has(m.id), `${m.id} listed twice`).to.equal(false);
          expect(m.recipient).to.equal(`user${r}`);
          if (m.id.startsWith("crash-")) expect(m.envelope.startsWith(`e${Number(m.id.slice(6))}:`), `envelope of ${m.id}`).to.equal(true);
          listed.add(m.id);
        }
      }
      expect(await mailbox.depth()).to.equal(listed.size);

      // Every confirmed put is there; every confirmed ack is delivered.
      const byRecipient = new Map<string, string[]>();
      for (const id of everPut) {
        const recipient = recipientOf(id);
        if (!byRecipient.has(recipient)) byRecipient.set(recipient, []);
        byRecipient.get(recipient)!.push(id);
      }
      const missing: string[] = [];
      const notDelivered: string[] = [];
      for (const [recipient, ids] of byRecipient) {
        for (let i = 0; i < ids.length; i += MAX_PENDING_IDS) {
          const answer = await mailbox.pendingIds({ recipient, sender: "alice", ids: ids.slice(i, i + MAX_PENDING_IDS), now: Date.now() });
          missing.push(...answer.unknown);
          for (const id of answer.pending) if (everAcked.has(id)) notDelivered.push(id);
          for (const id of answer.pending) expect(listed.has(id)).to.equal(true);
        }
      }
      expect(missing, "confirmed puts lost").to.deep.equal([]);
      expect(notDelivered, "confirmed acks lost").to.deep.equal([]);

      // The file is usable: a re-send is recognised, a new message is stored after everything else.
      const resent = put[put.length - 1];
      expect((await mailbox.put({ recipient: recipientOf(resent), sender: "alice", id: resent, envelope: "again", receivedAt: 1, expiresAt: 2 ** 50 })).outcome).to.not.equal("new");
      const fresh = await mailbox.put({ recipient: "user0", sender: "bob", id: `after-round-${round}`, envelope: "new", receivedAt: 1, expiresAt: 2 ** 50 });
      expect(fresh.outcome).to.equal("new");
      await mailbox.close();
    }
    console.log(`      file-mailbox crash: ${JSON.stringify(figures)}`);
    expect(figures.putsConfirmed).to.be.greaterThan(6_000);
  });
});
