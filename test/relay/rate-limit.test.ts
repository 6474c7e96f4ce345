import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import Redis from "ioredis";
import { ChatError } from "../../protocol/errors";
import { RateLimiter } from "../../relay/http/rate-limit";
import { backoffDelayMs, type AttemptLimiter, type BackoffPolicy, type LimitEntry } from "../../relay/limits/limits";
import type { Pool } from "mysql2/promise";
import pino from "pino";
import { createAttemptLimits, type AttemptLimits } from "../../relay/limits/create";
import { MemoryAttemptLimiter, MemoryPasswordBackoff } from "../../relay/limits/memory";
import { createMysqlPool } from "../../relay/storage/mysql-pool";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { freePort } from "../helpers/ports";
import { expect, expectRejectedCode } from "../helpers/chai";

const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

/** Resolves to the RATE_LIMITED error `task` throws; fails the test if it throws nothing or something else. */
function refused(task: () => Promise<unknown> | unknown): Promise<ChatError> {
  return expectRejectedCode(Promise.resolve().then(task), "RATE_LIMITED");
}

const retryAfter = (error: ChatError) => error.details?.retryAfterSeconds as number;

async function hitTimes(limiter: AttemptLimiter, entries: LimitEntry[], times: number) {
  for (let i = 0; i < times; i++) await limiter.hit(entries);
}

const policy: BackoffPolicy = { freeFailures: 3, baseDelayMs: 1_000, maxDelayMs: 8_000, forgetAfterMs: 60_000 };

describe("rate limits", function () {
  describe("backoff policy", () => {
    it("is free for the first failures, then doubles from the base delay up to the cap", () => {
      const delays = [1, 2, 3, 4, 5, 6, 7, 8, 200].map((n) => backoffDelayMs(policy, n));
      expect(delays).to.deep.equal([0, 0, 0, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    });
  });

  describe("in memory", () => {
    let now: number;
    const clock = () => now;
    beforeEach(() => {
      now = 1_700_000_000_000;
    });

    it("refuses the (limit+1)th hit with the wait until the window ends, and allows again after it", async () => {
      const limiter = new MemoryAttemptLimiter({ windowMs: 60_000, clock });
      const entries = [{ key: "login:user:alice", limit: 3 }];
      await hitTimes(limiter, entries, 3);
      now += 20_000;
      expect(retryAfter(await refused(() => limiter.hit(entries)))).to.equal(40);
      now += 40_000;
      await limiter.hit(entries);
    });

    it("refuses when any one of the keys is over its limit and reports the longest wait", async () => {
      const limiter = new MemoryAttemptLimiter({ windowMs: 10_000, clock });
      await hitTimes(limiter, [{ key: "addr:1", limit: 100 }], 2);
      now += 5_000;
      await limiter.hit([{ key: "user:bob", limit: 1 }]);
      const error = await refused(() => limiter.hit([{ key: "addr:1", limit: 2 }, { key: "user:bob", limit: 1 }]));
      expect(retryAfter(error)).to.equal(10); // bob's window started later, so it ends later
    });

    it("stays within its key bound under 200,000 junk keys and still limits a real key", async () => {
      const maxKeys = 100_000;
      const limiter = new MemoryAttemptLimiter({ windowMs: 60_000, maxKeys, clock });
      const victim = [{ key: "login:user:victim", limit: 5 }];
      await hitTimes(limiter, victim, 5);
      // Fewer junk keys than the bound: the victim's count survives.
      for (let i = 0; i < 50_000; i++) limiter.hitNow([{ key: `login:user:junk${i}`, limit: 5 }]);
      await refused(() => limiter.hit(victim));
      let peak = 0;
      for (let i = 50_000; i < 200_000; i++) {
        limiter.hitNow([{ key: `login:user:junk${i}`, limit: 5 }]);
        if (i % 1000 === 0) peak = Math.max(peak, limiter.size);
      }
      expect(Math.max(peak, limiter.size)).to.be.at.most(maxKeys);
      // Counting starts again for an evicted key, and limits it again.
      await hitTimes(limiter, victim, 5);
      await refused(() => limiter.hit(victim));
      expect(limiter.size).to.be.at.most(maxKeys);
    });

    it("drops expired windows, so idle keys do not stay", async () => {
      const limiter = new MemoryAttemptLimiter({ windowMs: 1_000, clock });
      for (let i = 0; i < 1_000; i++) await limiter.hit([{ key: `k${i}`, limit: 1 }]);
      expect(limiter.size).to.equal(1_000);
      now += 1_000;
      await limiter.hit([{ key: "fresh", limit: 1 }]);
      expect(limiter.size).to.equal(1);
    });

    it("rejects malformed entries as a bug, not as a limit", async () => {
      const limiter = new MemoryAttemptLimiter({ windowMs: 1_000, clock });
      let caught: unknown;
      await limiter.hit([{ key: "k", limit: 0 }]).catch((error) => (caught = error));
      expect(caught).to.be.instanceOf(TypeError);
    });

    it("keeps the routes' synchronous RateLimiter: refuses at limit+1 and stays bounded", () => {
      const limiter = new RateLimiter(60_000, clock, 1_000);
      const entries = [{ key: "challenge:user:carol", limit: 2 }];
      limiter.hit(entries);
      limiter.hit(entries);
      let error: unknown;
      try {
        limiter.hit(entries);
      } catch (e) {
        error = e;
      }
      expect((error as ChatError).code).to.equal("RATE_LIMITED");
      expect(retryAfter(error as ChatError)).to.equal(60);
    });

    it("backs off a user after the free failures, doubling up to the cap, and forgets on success", async () => {
      const backoff = new MemoryPasswordBackoff({ policy, clock });
      for (let i = 1; i <= 3; i++) expect(await backoff.recordFailure("dave")).to.deep.equal({ failures: i, delayMs: 0 });
      await backoff.checkAllowed("dave");
      expect(await backoff.recordFailure("dave")).to.deep.equal({ failures: 4, delayMs: 1_000 });
      expect(retryAfter(await refused(() => backoff.checkAllowed("dave")))).to.equal(1);
      await backoff.checkAllowed("erin"); // another user is not affected
      now += 1_000;
      await backoff.checkAllowed("dave");
      expect((await backoff.recordFailure("dave")).delayMs).to.equal(2_000);
      for (let i = 0; i < 10; i++) await backoff.recordFailure("dave");
      expect(retryAfter(await refused(() => backoff.checkAllowed("dave")))).to.equal(8);
      await backoff.recordSuccess("dave");
      await backoff.checkAllowed("dave");
      expect((await backoff.recordFailure("dave")).failures).to.equal(1);
    });

    it("forgets a user's failures after forgetAfterMs and stays within its key bound", async () => {
      const backoff = new MemoryPasswordBackoff({ policy, maxKeys: 1_000, clock });
      for (let i = 0; i < 4; i++) await backoff.recordFailure("frank");
      now += policy.forgetAfterMs;
      expect((await backoff.recordFailure("frank")).failures).to.equal(1);
      for (let i = 0; i < 5_000; i++) await backoff.recordFailure(`junk${i}`);
      expect(backoff.size).to.be.at.most(1_000);
    });
  });

  describe("in Redis", () => {
    let admin: Redis;
    let prefix: string;
    const opened: AttemptLimits[] = [];

    const open = async (options: { windowMs?: number; url?: string; logger?: pino.Logger } = {}) => {
      const limits = createAttemptLimits({
        redisUrl: options.url ?? REDIS_URL,
        pool: null,
        windowMs: options.windowMs ?? 60_000,
        policy,
        keyPrefix: prefix,
        logger: options.logger,
      });
      opened.push(limits);
      expect(limits.store).to.equal("redis");
      if (!options.url) await limits.ready();
      return limits;
    };

    before(async () => {
      admin = new Redis(REDIS_URL);
      await admin.ping();
    });
    beforeEach(() => {
      prefix = `test:limits:${randomBytes(6).toString("hex")}:`;
    });
    afterEach(async () => {
      await Promise.all(opened.splice(0).map((l) => l.close()));
      const keys = await admin.keys(prefix + "*");
      if (keys.length) await admin.del(...keys);
    });
    after(async () => {
      await admin.quit();
    });

    it("shares the count between two instances: the (limit+1)th hit, on the other one, is refused", async () => {
      const [a, b] = [await open(), await open()];
      const entries = [
        { key: "login:user:alice", limit: 4 },
        { key: "login:addr:10.0.0.1", limit: 100 },
      ];
      await hitTimes(a.limiter, entries, 2);
      await hitTimes(b.limiter, entries, 2);
      const error = await refused(() => b.limiter.hit(entries));
      expect(retryAfter(error)).to.be.within(1, 60);
      await refused(() => a.limiter.hit(entries));
      // Every key expires with its window, so Redis holds only the current window's keys.
      const keys = await admin.keys(prefix + "*");
      expect(keys.sort()).to.deep.equal([prefix + "w:login:addr:10.0.0.1", prefix + "w:login:user:alice"]);
      for (const key of keys) expect(await admin.pttl(key)).to.be.within(1, 60_000);
      expect(await admin.get(prefix + "w:login:user:alice")).to.equal("6");
    });

    it("allows again once the window has expired, and the key is gone from Redis", async () => {
      const limiter = (await open({ windowMs: 300 })).limiter;
      const entries = [{ key: "login:user:bob", limit: 2 }];
      await hitTimes(limiter, entries, 2);
      expect(retryAfter(await refused(() => limiter.hit(entries)))).to.equal(1);
      await new Promise((resolve) => setTimeout(resolve, 350));
      await limiter.hit(entries);
      expect(await admin.exists(prefix + "w:login:user:bob")).to.equal(1);
      await new Promise((resolve) => setTimeout(resolve, 350));
      expect(await admin.exists(prefix + "w:login:user:bob")).to.equal(0);
    });

    it("shares a user's password backoff between instances, with the same delays as the policy", async () => {
      const [a, b] = [await open(), await open()];
      const delays: number[] = [];
      for (let n = 1; n <= 8; n++) delays.push((await (n % 2 ? a : b).backoff.recordFailure("carol")).delayMs);
      expect(delays).to.deep.equal([1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelayMs(policy, n)));
      expect(retryAfter(await refused(() => a.backoff.checkAllowed("carol")))).to.be.within(7, 8);
      expect(retryAfter(await refused(() => b.backoff.checkAllowed("carol")))).to.be.within(7, 8);
      await b.backoff.checkAllowed("dave");
      const failKey = prefix + "f:carol";
      expect(await admin.get(failKey)).to.equal("8");
      expect(await admin.pttl(failKey)).to.be.within(1, policy.forgetAfterMs);
      await a.backoff.recordSuccess("carol");
      await b.backoff.checkAllowed("carol");
      expect(await admin.exists(failKey, prefix + "b:carol")).to.equal(0);
    });

    it("falls back to this instance's memory while Redis is unreachable, still limits, and says so once", async () => {
      const port = await freePort(); // nothing listens there
      const lines: string[] = [];
      const logger = pino({ level: "info" }, { write: (line: string) => lines.push(line) });
      const limits = await open({ url: `redis://127.0.0.1:${port}`, logger });
      const entries = [{ key: "login:user:erin", limit: 3 }];
      await hitTimes(limits.limiter, entries, 3);
      await refused(() => limits.limiter.hit(entries));
      for (let i = 0; i < 4; i++) await limits.backoff.recordFailure("erin");
      await refused(() => limits.backoff.checkAllowed("erin"));
      expect(lines.filter((line) => line.includes("counting on this instance only"))).to.have.length(1);
    });

    describe("with a Redis that goes away and comes back", () => {
      let server: ChildProcess | null = null;
      let port: number;
      const start = async () => {
        server = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
          stdio: ["ignore", "pipe", "ignore"],
        });
        let out = "";
        server.stdout!.on("data", (chunk) => (out += chunk));
        const deadline = Date.now() + 5_000;
        while (!out.includes("Ready to accept connections")) {
          if (Date.now() > deadline) throw new Error("redis-server did not start");
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      };
      const stop = async () => {
        if (!server) return;
        const exited = once(server, "exit");
        server.kill("SIGKILL");
        await exited;
        server = null;
      };
      before(async () => {
        port = await freePort();
        await start();
      });
      after(stop);

      it("counts locally during the outage and across instances again after it", async () => {
        const url = `redis://127.0.0.1:${port}`;
        const [a, b] = [await open({ url }), await open({ url })];
        await a.ready();
        await b.ready();
        const entries = [{ key: "login:user:frank", limit: 3 }];
        await hitTimes(a.limiter, entries, 3);
        await refused(() => b.limiter.hit(entries));

        await stop();
        const fresh = [{ key: "login:user:grace", limit: 3 }];
        // Each instance now counts alone, but it still counts: the 4th hit on one instance is refused.
        await hitTimes(a.limiter, fresh, 3);
        await refused(() => a.limiter.hit(fresh));
        await hitTimes(b.limiter, fresh, 3);
        await refused(() => b.limiter.hit(fresh));

        await start();
        await a.ready();
        await b.ready();
        const shared = [{ key: "login:user:heidi", limit: 2 }];
        await hitTimes(a.limiter, shared, 2);
        await refused(() => b.limiter.hit(shared));
      });
    });
  });

  describe("in MySQL (no Redis configured)", () => {
    let db: TestDatabase;
    let pool: Pool;
    let now: number;
    const clock = () => now;
    const open = async (windowMs = 60_000) => {
      const limits = createAttemptLimits({ redisUrl: null, pool, windowMs, policy, clock });
      expect(limits.store).to.equal("mysql");
      await limits.migrate();
      return limits;
    };
    const rowCount = async (table: string) => {
      const [rows] = await pool.query<any[]>(`SELECT COUNT(*) AS n FROM ${table}`);
      return Number(rows[0].n);
    };

    before(async () => {
      db = await createTestDatabase("chat_limits");
      pool = createMysqlPool(db.url, { connectionLimit: 4 });
    });
    beforeEach(() => {
      now = 1_700_000_000_000;
    });
    after(async () => {
      await pool?.end();
      await db?.drop();
    });

    it("shares the count between two instances and starts a new window after expiry", async () => {
      const [a, b] = [await open(), await open()];
      const entries = [
        { key: "login:user:ivan", limit: 3 },
        { key: "login:addr:10.0.0.2", limit: 100 },
      ];
      await hitTimes(a.limiter, entries, 2);
      await b.limiter.hit(entries);
      now += 15_000;
      expect(retryAfter(await refused(() => b.limiter.hit(entries)))).to.equal(45);
      await refused(() => a.limiter.hit(entries));
      now += 45_000;
      await a.limiter.hit(entries);
      await hitTimes(b.limiter, entries, 2);
      await refused(() => a.limiter.hit(entries));
    });

    it("shares the password backoff between instances", async () => {
      const [a, b] = [await open(), await open()];
      const delays: number[] = [];
      for (let n = 1; n <= 6; n++) delays.push((await (n % 2 ? a : b).backoff.recordFailure("judy")).delayMs);
      expect(delays).to.deep.equal([1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(policy, n)));
      expect(retryAfter(await refused(() => a.backoff.checkAllowed("judy")))).to.equal(4);
      now += 4_000;
      await b.backoff.checkAllowed("judy");
      await b.backoff.recordSuccess("judy");
      expect((await a.backoff.recordFailure("judy")).failures).to.equal(1);
    });

    it("purges expired rows, so the tables hold about one window of keys", async () => {
      const limits = await open(1_000);
      await pool.query("DELETE FROM rate_limit_windows"); // rows of the tests above
      for (let i = 0; i < 300; i++) await limits.limiter.hit([{ key: `junk:${i}`, limit: 5 }]);
      expect(await rowCount("rate_limit_windows")).to.be.at.least(300);
      now += 1_000;
      await limits.limiter.hit([{ key: "fresh", limit: 5 }]); // starts the purge in the background
      const deadline = Date.now() + 5_000;
      while ((await rowCount("rate_limit_windows")) > 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      expect(await rowCount("rate_limit_windows")).to.equal(1);
    });

    it("falls back to memory while the database is unreachable, and still limits", async () => {
      const deadPool = createMysqlPool(`mysql://root@127.0.0.1:${await freePort()}/none`, { connectionLimit: 1 });
      try {
        const limits = createAttemptLimits({ redisUrl: null, pool: deadPool, windowMs: 60_000, policy, clock });
        const entries = [{ key: "login:user:mallory", limit: 2 }];
        await hitTimes(limits.limiter, entries, 2);
        await refused(() => limits.limiter.hit(entries));
      } finally {
        await deadPool.end();
      }
    });
  });
});
