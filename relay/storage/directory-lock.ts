/**
 * One process per data directory: a LOCK file holding the owner's pid, created exclusively. A lock left by
 * a process that no longer runs (a crash, SIGKILL) is taken over; a live owner makes the second opener fail
 * with MAILBOX_LOCKED instead of two writers interleaving one log. (Two processes starting at the same
 * instant over a stale lock could both take it over; Node has no flock, and a relay is started once.)
 */
import { open, readFile, unlink } from "node:fs/promises";
import path from "node:path";
import { MailboxError } from "./mailbox";

/** Directories locked by this process: a pid check cannot tell two opens in one process apart. */
const heldHere = new Set<string>();

export interface DirectoryLock {
  release(): Promise<void>;
}

function processIsRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"; // exists, owned by another user
  }
}

export async function lockDirectory(dir: string): Promise<DirectoryLock> {
  const resolved = path.resolve(dir);
  const lockPath = path.join(resolved, "LOCK");
  if (heldHere.has(resolved)) throw new MailboxError("MAILBOX_LOCKED", `${resolved} is already open in this process`);
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lockPath, "wx");
      try {
        await handle.writeFile(`${process.pid}\n`);
      } finally {
        await handle.close();
      }
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt > 0) {
        if ((error as NodeJS.ErrnoException).code === "EEXIST") {
          throw new MailboxError("MAILBOX_LOCKED", `${lockPath} was taken by another process while starting`);
        }
        throw error;
      }
      const owner = Number.parseInt((await readFile(lockPath, "utf8").catch(() => "")).trim(), 10);
      // Our own pid in a lock we do not hold is a stale one from a previous life (pid 1 in a container).
      if (Number.isSafeInteger(owner) && owner > 0 && owner !== process.pid && processIsRunning(owner)) {
        throw new MailboxError("MAILBOX_LOCKED", `${resolved} is in use by process ${owner} (remove ${lockPath} only if that process is not a relay)`);
      }
      await unlink(lockPath).catch(() => {});
    }
  }
  heldHere.add(resolved);
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      heldHere.delete(resolved);
      await unlink(lockPath).catch(() => {});
    },
  };
}
