/**
 * Group commit: items pushed while a flush is running wait and go out together in the next flush, and
 * only one flush runs at a time. One round trip (and one fsync) then serves many messages under load, and
 * the order of flushes is the order of pushes (so a sender's messages keep their order in the mailbox).
 */
export interface SerialBatcher<T, R> {
  push(item: T): Promise<R>;
  /** Resolves when nothing is queued or in flight. */
  idle(): Promise<void>;
  /** Running totals since the batcher was made. */
  stats(): SerialBatcherStats;
}

/**
 * What a batcher has flushed so far. `busyMs` grows by each flush's duration: its rate is the share of time
 * a flush was in flight, and near 1 the store is the bottleneck (pushed items queue behind it).
 */
export interface SerialBatcherStats {
  flushes: number;
  items: number;
  busyMs: number;
}

export function createSerialBatcher<T, R>(params: {
  maxBatch: number;
  /**
   * How long a push into an idle batcher waits for company before it is flushed (0: the next turn of the
   * event loop). For writes nobody waits on, where one round trip for many is worth a little delay.
   */
  lingerMs?: number;
  /**
   * The least time between the starts of two flushes while fewer than `paceBelow` items wait: under
   * light load, items gather for this long into one flush instead of going out in as many small ones as the
   * store can turn round. A push into an idle batcher that has not flushed for this long still goes out at
   * once, and so does a queue of `paceBelow` items or more (its flush is big enough; holding it would only
   * add latency, and a busy sender's waiting items, to a backlog).
   */
  minIntervalMs?: number;
  /** How many waiting items end a pacing pause (by default a quarter of maxBatch). */
  paceBelow?: number;
  /** Returns one result per item, in order; a rejection fails every item of the batch. */
  flush: (items: T[]) => Promise<R[]>;
}): SerialBatcher<T, R> {
  type Entry = { item: T; resolve: (r: R) => void; reject: (e: unknown) => void };
  let queue: Entry[] = [];
  let running = false;
  let scheduled = false;
  let idleWaiters: Array<() => void> = [];
  let lastFlushAt = -Infinity;
  const totals: SerialBatcherStats = { flushes: 0, items: 0, busyMs: 0 };
  const minInterval = params.minIntervalMs ?? 0;
  const paceBelow = params.paceBelow ?? Math.max(1, Math.floor(params.maxBatch / 4));
  /** ends the current pacing pause early (the queue reached paceBelow) */
  let wake: (() => void) | null = null;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => wake?.(), ms);
      wake = () => {
        clearTimeout(timer);
        wake = null;
        resolve();
      };
    });

  const run = async () => {
    scheduled = false;
    running = true;
    while (queue.length > 0) {
      const wait = lastFlushAt + minInterval - performance.now();
      if (wait > 0 && queue.length < paceBelow) await pause(wait);
      lastFlushAt = performance.now();
      const batch = queue.slice(0, params.maxBatch);
      queue = queue.slice(batch.length);
      try {
        const results = await params.flush(batch.map((e) => e.item));
        batch.forEach((e, i) => e.resolve(results[i]));
      } catch (error) {
        for (const e of batch) e.reject(error);
      } finally {
        totals.flushes++;
        totals.items += batch.length;
        totals.busyMs += performance.now() - lastFlushAt;
      }
    }
    running = false;
    const waiters = idleWaiters;
    idleWaiters = [];
    for (const w of waiters) w();
  };

  return {
    push(item) {
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        // setImmediate rather than a microtask: frames of every socket read in this turn join the batch.
        if (!running && !scheduled) {
          scheduled = true;
          const paced = lastFlushAt + minInterval - performance.now();
          if (params.lingerMs) setTimeout(run, Math.max(params.lingerMs, paced));
          else if (paced > 0) void pause(paced).then(run);
          else setImmediate(run);
        } else if (wake && queue.length >= paceBelow) wake();
      });
    },
    idle() {
      if (!running && !scheduled && queue.length === 0) return Promise.resolve();
      return new Promise<void>((resolve) => idleWaiters.push(resolve));
    },
    stats: () => ({ ...totals }),
  };
}
