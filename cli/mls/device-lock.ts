/**
 * One chat process at a time works on a device's MLS state: two processes (a `talk` and a `send` in another
 * terminal) each sealing with the same saved state would reuse a message key and then overwrite each other's
 * ratchet. The lock is a file created exclusively (O_EXCL) holding the owner's pid; a file left by a process
 * that died is taken over. Within a process, operations run one at a time too (a talk's catch-up and a line
 * being sent), and an operation may call another (nested calls run inside the outer one's turn).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { closeSync, openSync, readFileSync, rmSync, writeSync } from "node:fs";
import { ChatError } from "../../protocol/errors";

const WAIT_STEP_MS = 25;
export const DEFAULT_LOCK_WAIT_MS = 60_000;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

export class DeviceLock {
  private readonly inside = new AsyncLocalStorage<DeviceLock>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly file: string,
    private readonly waitMs = DEFAULT_LOCK_WAIT_MS,
  ) {}

  private tryTake(): boolean {
    try {
      const fd = openSync(this.file, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return true;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    let owner = NaN;
    try {
      owner = Number(readFileSync(this.file, "utf8"));
    } catch {
      return false; // released meanwhile: the next try takes it
    }
    // A torn write (empty file) is only possible in the instant of creation; a dead owner's lock is stale.
    if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && !alive(owner)) rmSync(this.file, { force: true });
    return false;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    if (this.inside.getStore() === this) return work();
    const turn = this.queue.then(() => this.exclusive(work));
    this.queue = turn.catch(() => undefined);
    return turn;
  }

  private async exclusive<T>(work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.waitMs;
    while (!this.tryTake()) {
      if (Date.now() > deadline) throw new ChatError("DEVICE_BUSY", `another chat process of this user is using its messages (lock ${this.file}); try again when it is done`);
      await new Promise((resolve) => setTimeout(resolve, WAIT_STEP_MS));
    }
    try {
      return await this.inside.run(this, work);
    } finally {
      rmSync(this.file, { force: true });
    }
  }
}
