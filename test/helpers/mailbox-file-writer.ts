/**
 * A child process for the file mailbox crash test: opens the mailbox in DIR and puts messages FROM..FROM+COUNT-1
 * (64 in flight), printing `put <id>` only after put() resolved and `ack <id>` after its ack resolved (three messages in
 * four are acknowledged, so the log fills with garbage and compacts under the burst too). Its parent SIGKILLs it mid-burst and checks that everything printed survived.
 * Usage: node --import tsx test/helpers/mailbox-file-writer.ts DIR FROM COUNT
 */
import { createFileMailbox } from "../../relay/storage/mailbox-file";

export const writerId = (i: number) => `crash-${String(i).padStart(7, "0")}`;

async function main(dir: string, from: number, count: number) {
  const mailbox = createFileMailbox({
    dir,
    compactMinBytes: 256 * 1024,
    onEvent: (event) => process.stdout.write(`event ${event.type}\n`),
  });
  await mailbox.migrate();
  process.stdout.write("ready\n"); // stdout to a pipe is synchronous on Linux: a printed line was written
  let next = from;
  const end = from + count;
  const worker = async () => {
    while (next < end) {
      const i = next++;
      const id = writerId(i);
      // varied sizes, so that a kill lands inside records of every length
      const envelope = `e${i}:` + "x".repeat((i * 7919) % 3000);
      await mailbox.put({ recipient: `user${i % 5}`, sender: "alice", id, envelope, receivedAt: i, expiresAt: 2 ** 50 });
      process.stdout.write(`put ${id}\n`);
      if (i % 4 !== 0) {
        await mailbox.ack({ recipient: `user${i % 5}`, sender: "alice", id });
        process.stdout.write(`ack ${id}\n`);
      }
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  await mailbox.close();
  process.stdout.write("done\n");
}

if (require.main === module) {
  const [dir, from, count] = process.argv.slice(2);
  main(dir, Number(from), Number(count)).catch((error) => {
    process.stderr.write(`${(error as Error).stack ?? error}\n`);
    process.exit(1);
  });
}
