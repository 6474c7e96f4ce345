/**
 * The group-commit batcher on its own (no store): order, batch bounds, and the least interval between flushes
 * that lets items gather under load without holding one that arrives while the batcher is idle.
 */
import { expect } from "chai";
import { performance } from "node:perf_hooks";
import { createSerialBatcher } from "../../relay/storage/serial-batcher";

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A batcher whose flush takes `flushMs`, recording each flush's items and start time. */
function recordingBatcher(params: { maxBatch: number; minIntervalMs?: number; flushMs: number }) {
  const flushes: Array<{ items: number[]; at: number }> = [];
  const batcher = createSerialBatcher<number, string>({
    maxBatch: params.maxBatch,
    minIntervalMs: params.minIntervalMs,
    flush: async (items) => {
      flushes.push({ items, at: performance.now() });
      await sleep(params.flushMs);
      return items.map((i) => `r${i}`);
    },
  });
  return { batcher, flushes };
}

describe("serial batcher", () => {
  it("answers every item with its own result, in push order, one flush at a time", async () => {
    const { batcher, flushes } = recordingBatcher({ maxBatch: 3, flushMs: 5 });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => batcher.push(i)));
    expect(results).to.deep.equal(Array.from({ length: 8 }, (_, i) => `r${i}`));
    expect(flushes.flatMap((f) => f.items)).to.deep.equal([0, 1, 2, 3, 4, 5, 6, 7]);
    for (const f of flushes) expect(f.items.length).to.be.at.most(3);
  });

  it("keeps running totals: flushes, items, and the time flushes were in flight", async () => {
    const { batcher, flushes } = recordingBatcher({ maxBatch: 4, flushMs: 20 });
    expect(batcher.stats()).to.deep.equal({ flushes: 0, items: 0, busyMs: 0 });
    const started = performance.now();
    await Promise.all(Array.from({ length: 10 }, (_, i) => batcher.push(i)));
    const wallMs = performance.now() - started;
    const totals = batcher.stats();
    expect(totals.flushes).to.equal(flushes.length);
    expect(totals.items).to.equal(10);
    // Each flush sleeps 20 ms (timers may fire a millisecond early), one at a time: never more than the wall time.
    expect(totals.busyMs).to.be.at.least(19 * flushes.length);
    expect(totals.busyMs).to.be.at.most(wallMs);
    // A copy: the caller cannot change the batcher's totals.
    totals.items = 0;
    expect(batcher.stats().items).to.equal(10);
  });

  it("with minIntervalMs, items pushed during a flush wait out the interval and go together", async () => {
    const { batcher, flushes } = recordingBatcher({ maxBatch: 100, minIntervalMs: 60, flushMs: 1 });
    const first = batcher.push(0);
    await sleep(10);
    // The first flush is over: these arrive while the interval since its start still runs.
    const rest = [1, 2, 3].map((i) => batcher.push(i));
    await Promise.all([first, ...rest]);
    expect(flushes.map((f) => f.items)).to.deep.equal([[0], [1, 2, 3]]);
    // Timers may fire a millisecond early.
    expect(flushes[1].at - flushes[0].at).to.be.at.least(58);
  });

  it("with minIntervalMs, an item pushed into a batcher idle for longer than the interval is flushed at once", async () => {
    const { batcher, flushes } = recordingBatcher({ maxBatch: 100, minIntervalMs: 100, flushMs: 1 });
    await batcher.push(0);
    await sleep(150);
    const pushedAt = performance.now();
    await batcher.push(1);
    // Held for the interval, it would have waited 100 ms.
    expect(flushes[1].at - pushedAt).to.be.below(60);
  });

  it("with minIntervalMs, a quarter batch waiting goes at once, whether pushed into an idle batcher or during a flush", async () => {
    const idle = recordingBatcher({ maxBatch: 8, minIntervalMs: 500, flushMs: 1 });
    await idle.batcher.push(0);
    const started = performance.now();
    // Pushed into an idle batcher within the interval: held, until a second item makes a quarter of 8.
    await Promise.all([idle.batcher.push(1), idle.batcher.push(2)]);
    expect(idle.flushes.map((f) => f.items)).to.deep.equal([[0], [1, 2]]);
    expect(performance.now() - started).to.be.below(400);

    const busy = recordingBatcher({ maxBatch: 8, minIntervalMs: 500, flushMs: 50 });
    const first = busy.batcher.push(0);
    await sleep(10);
    // Pushed during the first flush: held after it, until a second item joins.
    const second = busy.batcher.push(1);
    await first;
    await sleep(50);
    await Promise.all([second, busy.batcher.push(2)]);
    expect(busy.flushes.map((f) => f.items)).to.deep.equal([[0], [1, 2]]);
    expect(busy.flushes[1].at - busy.flushes[0].at).to.be.below(400);
  });

  it("with minIntervalMs, a full batch does not wait for the interval", async () => {
    const { batcher, flushes } = recordingBatcher({ maxBatch: 4, minIntervalMs: 500, flushMs: 1 });
    const started = performance.now();
    await Promise.all(Array.from({ length: 12 }, (_, i) => batcher.push(i)));
    expect(flushes.map((f) => f.items.length)).to.deep.equal([4, 4, 4]);
    expect(performance.now() - started).to.be.below(400);
    await batcher.idle();
  });
});
