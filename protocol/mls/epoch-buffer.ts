/**
 * Messages of a later epoch that arrived before the commit leading there (RFC 9420 §14 leaves ordering
 * to the Delivery Service; a relay's fan-out can still race a commit). Bounded: past `maxMessages` the
 * oldest is dropped, so a flood of bogus "future" messages cannot grow memory without limit.
 */
export interface EpochBuffer {
  hold(message: Uint8Array, epoch: bigint): void;
  /** removes and returns, in arrival order, the messages whose epoch is now at most `epoch` */
  takeReady(epoch: bigint): Uint8Array[];
  readonly size: number;
}

export function createEpochBuffer(params: { maxMessages?: number } = {}): EpochBuffer {
  const max = params.maxMessages ?? 1000;
  let held: { message: Uint8Array; epoch: bigint }[] = [];
  return {
    hold(message, epoch) {
      held.push({ message, epoch });
      if (held.length > max) held.shift();
    },
    takeReady(epoch) {
      const ready = held.filter((entry) => entry.epoch <= epoch).map((entry) => entry.message);
      held = held.filter((entry) => entry.epoch > epoch);
      return ready;
    },
    get size() {
      return held.length;
    },
  };
}
