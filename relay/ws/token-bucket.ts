/** A token bucket: `ratePerSecond` tokens refill continuously up to `burst`. take() spends one. */
export interface TokenBucket {
  /** 0 when a token was spent; otherwise the milliseconds until one is available (nothing spent). */
  take(now: number): number;
}

export function createTokenBucket(params: { ratePerSecond: number; burst: number; now: number }): TokenBucket {
  let tokens = params.burst;
  let last = params.now;
  return {
    take(now) {
      tokens = Math.min(params.burst, tokens + ((now - last) * params.ratePerSecond) / 1000);
      last = now;
      if (tokens >= 1) {
        tokens -= 1;
        return 0;
      }
      return Math.ceil(((1 - tokens) * 1000) / params.ratePerSecond);
    },
  };
}
