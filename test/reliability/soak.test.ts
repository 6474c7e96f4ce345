/**
 * The relay under abuse: a relay process (TLS, MySQL, anvil) while a control pair of real clients keeps
 * exchanging messages, and attacks run one after another: a client that never reads while another floods
 * it; 300 connections with one token; a slowloris on HTTPS; a mailbox flood to one user (and sends to
 * names nobody registered); 1,000 key lookups of junk names. Throughout: the relay's resident memory is
 * read from /proc, the control pair's latency is measured, and /healthz is asked. What must hold: RSS stays
 * under RSS_BOUND_MIB, every control message arrives, /healthz answers 200. The figures are printed as one
 * JSON line. Loopback only; attackers use their own loopback addresses (127.0.0.x), as distinct clients would.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import https from "node:https";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import tls from "node:tls";
import { Wallet, hexlify } from "ethers";
import WebSocket from "ws";
import { registryDomain, type RegistryDomain } from "../../protocol/eip712";
import { loginMessage } from "../../protocol/wire";
import { newIdentity, signRegister, type Identity } from "../contract/signing";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { createTestDatabase, type TestDatabase } from "../helpers/mysql";
import { deployRegistry, type DeployedRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";

/** The stated bound on the relay's resident memory during every attack. */
const RSS_BOUND_MIB = 400;
const CONTROL_INTERVAL_MS = 50;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface User {
  username: string;
  identity: Identity;
  credential: string;
}

interface PhaseFigures {
  attack: string;
  peakRssMiB: number;
  controlP99Ms: number;
  controlSent: number;
  healthFailures: number;
  notes: Record<string, number>;
}

function rssKiB(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? 0);
  return { rss: field("VmRSS"), hwm: field("VmHWM") };
}

function p99(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]);
}

describe("soak: the relay under abuse keeps serving honest users in bounded memory", function () {
  this.timeout(240_000);
  let anvil: AnvilNode;
  let deployed: DeployedRegistry;
  let db: TestDatabase;
  let dataDir: string;
  let relay: RelayProcess;
  let domain: RegistryDomain;

  before(async () => {
    anvil = await startAnvil();
    deployed = await deployRegistry({ rpcUrl: anvil.url });
    domain = registryDomain({ chainId: deployed.chainId, verifyingContract: deployed.address });
    db = await createTestDatabase("chat_soak");
    dataDir = await mkdtemp(path.join(tmpdir(), "chat-soak-"));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: deployed.address,
      deployBlock: deployed.deployBlock,
      relayerKey: deployed.relayerKey,
      mysqlUrl: db.url,
      dataDir,
      env: {
        LOG_LEVEL: "warn",
        MAILBOX_QUOTA_MESSAGES: "200",
        // The relay's own defaults (the test helper raises them for suites whose clients all share 127.0.0.1).
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: "64",
        WS_MAX_CONNECTIONS_PER_ADDRESS: "32",
        HTTP_HEADERS_TIMEOUT_SECONDS: "2",
        HTTP_REQUEST_TIMEOUT_SECONDS: "4",
        // Small enough that the sleeper's output passes it (with the kernel's buffers) within the mailbox quota (200 × 60 kB).
        WS_MAX_BUFFERED_BYTES: String(1024 * 1024),
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await anvil?.stop();
    await db?.drop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  const request = relay_request;
  function relay_request(method: string, pathname: string, body?: unknown, options: { token?: string; localAddress?: string; agent?: https.Agent } = {}) {
    return new Promise<{ status: number; body: any }>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = https.request(
        `${relay.url}${pathname}`,
        {
          method,
          headers: {
            ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
            ...(options.token ? { authorization: `Bearer ${options.token}` } : {}),
          },
          ca: relay.certificate ?? undefined,
          checkServerIdentity: () => undefined,
          localAddress: options.localAddress,
          agent: options.agent,
          timeout: 10_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c) => chunks.push(c));
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8");
            let parsed: unknown = text;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              /* not JSON */
            }
            resolve({ status: res.statusCode ?? 0, body: parsed });
          });
        },
      );
      req.on("error", reject);
      req.on("timeout", () => req.destroy(new Error("request timed out")));
      req.end(payload);
    });
  }

  async function register(prefix: string): Promise<User> {
    const user = { username: `${prefix}_${randomBytes(4).toString("hex")}`, identity: newIdentity(), credential: hexlify(randomBytes(32)) };
    const hash = await request("POST", "/v1/credential-hash", { username: user.username, credential: user.credential });
    expect(hash.status, JSON.stringify(hash.body)).to.equal(200);
    const deadline = Math.floor(Date.now() / 1000) + 3600;
    const signature = signRegister({ domain, signer: user.identity, username: user.username, credentialHash: hash.body.credentialHash, deadline: BigInt(deadline) });
    const registered = await request("POST", "/v1/register", { username: user.username, credential: user.credential, publicKey: user.identity.publicKey, deadline, signature });
    expect(registered.status, JSON.stringify(registered.body)).to.be.oneOf([200, 201]);
    return user;
  }

  async function login(user: User): Promise<string> {
    const challenge = await request("POST", "/v1/login/challenge", { username: user.username });
    expect(challenge.status).to.equal(200);
    const message = loginMessage({ username: user.username, challenge: challenge.body.challenge, chainId: domain.chainId.toString(), contractAddress: domain.verifyingContract });
    const signature = await new Wallet(user.identity.privateKey).signMessage(message);
    const session = await request("POST", "/v1/login", { username: user.username, credential: user.credential, challenge: challenge.body.challenge, signature });
    expect(session.status, JSON.stringify(session.body)).to.equal(200);
    return session.body.token;
  }

  /** A WebSocket client over the relay's TLS; resolves once open, rejects with the HTTP status when refused. */
  function connect(token: string, localAddress = "127.0.0.1", onFrame: (frame: any) => void = () => undefined): Promise<WebSocket> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(`${relay.url.replace(/^https/, "wss")}/v1/ws`, {
        headers: { authorization: `Bearer ${token}` },
        ca: relay.certificate ?? undefined,
        checkServerIdentity: () => undefined,
        localAddress,
      } as unknown as WebSocket.ClientOptions);
      ws.on("message", (data) => onFrame(JSON.parse(data.toString())));
      ws.on("unexpected-response", (_req, res) => {
        res.resume();
        reject(Object.assign(new Error(`HTTP ${res.statusCode}`), { status: res.statusCode, retryAfter: res.headers["retry-after"] }));
      });
      ws.on("error", reject);
      ws.on("open", () => resolve(ws));
    });
  }

  it("holds memory, delivers every control message and answers /healthz through five attacks", async () => {
    const pid = relay.process.pid!;
    const [alice, bob, victim, sleeper, attacker] = await Promise.all(["ctl_a", "ctl_b", "victim", "sleeper", "attacker"].map(register));
    const [aliceToken, bobToken, sleeperToken, attackerToken] = await Promise.all([alice, bob, sleeper, attacker].map(login));

    // The control pair: alice sends to bob every CONTROL_INTERVAL_MS; bob acknowledges; latency is send to arrival.
    let phase: PhaseFigures | null = null;
    const sentAt = new Map<string, { at: number; phase: PhaseFigures | null }>();
    const latencies = new Map<PhaseFigures | null, number[]>();
    const arrived = new Set<string>();
    const controlErrors: any[] = [];
    let bobWs: WebSocket;
    bobWs = await connect(bobToken, "127.0.0.1", (frame) => {
      if (frame.type !== "message") return;
      const sent = sentAt.get(frame.id);
      if (sent && !arrived.has(frame.id)) {
        arrived.add(frame.id);
        const list = latencies.get(sent.phase) ?? [];
        list.push(performance.now() - sent.at);
        latencies.set(sent.phase, list);
      }
      bobWs.send(JSON.stringify({ type: "ack", id: frame.id, from: frame.from }));
    });
    const aliceWs = await connect(aliceToken, "127.0.0.1", (frame) => {
      if (frame.type === "error") controlErrors.push(frame);
    });
    let controlCount = 0;
    const controlTimer = setInterval(() => {
      const id = `ctl-${String(controlCount++).padStart(6, "0")}`;
      sentAt.set(id, { at: performance.now(), phase });
      if (phase) phase.controlSent++;
      aliceWs.send(JSON.stringify({ type: "send", id, to: bob.username, envelope: JSON.stringify({ v: 1, ciphertext: randomBytes(48).toString("base64") }) }));
    }, CONTROL_INTERVAL_MS);

    // Memory and health, sampled throughout.
    const rssTimer = setInterval(() => {
      if (phase) phase.peakRssMiB = Math.max(phase.peakRssMiB, Math.round(rssKiB(pid).rss / 1024));
    }, 100);
    let healthChecks = 0;
    const healthTimer = setInterval(() => {
      const current = phase;
      healthChecks++;
      request("GET", "/healthz").then(
        (r) => {
          if (r.status !== 200 && current) current.healthFailures++;
        },
        () => {
          if (current) current.healthFailures++;
        },
      );
    }, 250);

    const figures: PhaseFigures[] = [];
    async function during(attack: string, run: (notes: Record<string, number>) => Promise<void>) {
      const current: PhaseFigures = { attack, peakRssMiB: Math.round(rssKiB(pid).rss / 1024), controlP99Ms: 0, controlSent: 0, healthFailures: 0, notes: {} };
      phase = current;
      await run(current.notes);
      await sleep(500);
      phase = null;
      figures.push(current);
    }

    try {
      await sleep(500);
      const baselineMiB = Math.round(rssKiB(pid).rss / 1024);

      await during("client that never reads, flooded", async (notes) => {
        const sleeperWs = await connect(sleeperToken, "127.0.0.2");
        // The sleeper stops reading: its kernel buffers fill, then the relay must stop buffering for it.
        (sleeperWs as unknown as { _socket: { pause(): void } })._socket.pause();
        const floods = await Promise.all([0, 1].map(() => connect(attackerToken, "127.0.0.3")));
        const big = randomBytes(45_000).toString("base64");
        const started = Date.now();
        let n = 0;
        while (Date.now() - started < 6_000) {
          for (const ws of floods) for (let i = 0; i < 5; i++) ws.send(JSON.stringify({ type: "send", id: `fl-${String(n++).padStart(8, "0")}`, to: sleeper.username, envelope: JSON.stringify({ v: 1, ciphertext: big }) }));
          await sleep(50);
        }
        for (const ws of floods) ws.terminate();
        await sleep(1_500);
        notes.floodFrames = n;
        // The relay cut the sleeper (1013) instead of buffering for it: its own count says so.
        const metrics = await request("GET", "/metrics");
        notes.closedSlowReaders = Number(/chat_ws_closed_by_relay_total\{code="1013"\} (\d+)/.exec(String(metrics.body))?.[1] ?? 0);
        sleeperWs.terminate();
      });

      await during("300 connections with one token", async (notes) => {
        const results = await Promise.allSettled(Array.from({ length: 300 }, (_, i) => connect(attackerToken, `127.0.1.${1 + (i % 50)}`)));
        const open = results.filter((r): r is PromiseFulfilledResult<WebSocket> => r.status === "fulfilled").map((r) => r.value);
        notes.accepted = open.length;
        for (const r of results) {
          if (r.status === "fulfilled") continue;
          const reason = r.reason as { status?: number; code?: string; message?: string };
          const key = reason.status ? `refused${reason.status}` : `error_${reason.code ?? reason.message}`;
          notes[key] = (notes[key] ?? 0) + 1;
        }
        await sleep(1_000);
        for (const ws of open) ws.terminate();
      });

      await during("slowloris on HTTPS", async (notes) => {
        const sockets: tls.TLSSocket[] = [];
        let cut = 0;
        for (let i = 0; i < 100; i++) {
          const tcp = net.connect({ host: "127.0.0.1", port: relay.port, localAddress: "127.0.0.4" });
          tcp.on("error", () => undefined);
          const socket = tls.connect({ socket: tcp, ca: relay.certificate ?? undefined, checkServerIdentity: () => undefined });
          socket.on("error", () => undefined);
          socket.on("close", () => cut++);
          socket.on("secureConnect", () => socket.write("GET /healthz HTTP/1.1\r\nHost: relay\r\n"));
          sockets.push(socket);
        }
        const drip = setInterval(() => {
          for (const s of sockets) if (!s.destroyed) s.write(`X-Slow-${randomBytes(2).toString("hex")}: 1\r\n`);
        }, 500);
        await sleep(4_000);
        clearInterval(drip);
        notes.sockets = sockets.length;
        notes.cutByRelay = cut;
        for (const s of sockets) s.destroy();
      });

      await during("mailbox flood to one user", async (notes) => {
        const otherCodes = new Set<string>();
        const counts = { accepted: 0, MAILBOX_FULL: 0, RATE_LIMITED: 0, UNKNOWN_USER: 0, other: 0 };
        const count = (frame: any) => {
          if (frame.type === "accepted") counts.accepted++;
          else if (frame.type === "error") {
            if (frame.code in counts) counts[frame.code as keyof typeof counts]++;
            else {
              counts.other++;
              otherCodes.add(frame.code);
            }
          }
        };
        const floods = await Promise.all([0, 1, 2, 3].map(() => connect(attackerToken, "127.0.0.5", count)));
        let n = 0;
        const started = Date.now();
        while (Date.now() - started < 5_000) {
          for (const ws of floods) {
            for (let i = 0; i < 10; i++) ws.send(JSON.stringify({ type: "send", id: `mf-${String(n++).padStart(8, "0")}`, to: victim.username, envelope: JSON.stringify({ v: 1, ciphertext: randomBytes(200).toString("base64") }) }));
            ws.send(JSON.stringify({ type: "send", id: `junk-${String(n++).padStart(8, "0")}`, to: `nobody_${randomBytes(4).toString("hex")}`, envelope: "{}" }));
          }
          await sleep(50);
        }
        await sleep(500);
        for (const ws of floods) ws.terminate();
        Object.assign(notes, { sent: n, ...counts });
        expect([...otherCodes], "unexpected error codes").to.deep.equal([]);
      });

      await during("1,000 key lookups of junk names", async (notes) => {
        const agent = new https.Agent({ keepAlive: true, maxSockets: 16 });
        const statuses: Record<string, number> = {};
        let next = 0;
        await Promise.all(
          Array.from({ length: 16 }, async () => {
            while (next < 1_000) {
              next++;
              const r = await request("GET", `/v1/users/junk_${randomBytes(6).toString("hex")}/keys`, undefined, { localAddress: "127.0.0.6", agent }).catch(() => ({ status: 0 }));
              statuses[r.status] = (statuses[r.status] ?? 0) + 1;
            }
          }),
        );
        agent.destroy();
        for (const [status, n] of Object.entries(statuses)) notes[`status${status}`] = n;
      });

      clearInterval(controlTimer);
      for (let waited = 0; arrived.size < sentAt.size && waited < 10_000; waited += 100) await sleep(100);
      for (const f of figures) f.controlP99Ms = p99(latencies.get(f) ?? []);
      const missing = [...sentAt.keys()].filter((id) => !arrived.has(id));
      const summary = {
        soak: "relay under abuse",
        rssBoundMiB: RSS_BOUND_MIB,
        baselineRssMiB: baselineMiB,
        hwmMiB: Math.round(rssKiB(pid).hwm / 1024),
        controlMessages: sentAt.size,
        controlDelivered: arrived.size,
        healthChecks,
        phases: figures,
      };
      console.log(JSON.stringify(summary));

      expect(controlErrors, JSON.stringify(controlErrors.slice(0, 3))).to.deep.equal([]);
      expect(missing, "control messages that never arrived").to.deep.equal([]);
      for (const f of figures) {
        expect(f.peakRssMiB, `peak RSS during: ${f.attack}`).to.be.lessThan(RSS_BOUND_MIB);
        expect(f.healthFailures, `/healthz failures during: ${f.attack}`).to.equal(0);
        expect(f.controlSent, `control messages during: ${f.attack}`).to.be.greaterThan(0);
      }
      const [neverReads, manyConnections, slowloris, flood, junkKeys] = figures;
      expect(neverReads.notes.closedSlowReaders).to.be.at.least(1);
      expect(manyConnections.notes.accepted).to.be.at.most(8);
      // Refused on upgrade with 429, or (a machine too loaded to finish 300 TLS handshakes within the
      // handshake timeout) reset by the relay: nothing else, and never more than the per-user cap open.
      const { accepted, refused429 = 0, error_ECONNRESET: reset = 0, ...others } = manyConnections.notes;
      expect(others).to.deep.equal({});
      expect(refused429).to.be.greaterThan(0);
      expect(accepted + refused429 + reset).to.equal(300);
      expect(slowloris.notes.cutByRelay).to.equal(slowloris.notes.sockets);
      expect(flood.notes.MAILBOX_FULL).to.be.greaterThan(0);
      expect(flood.notes.accepted).to.be.at.most(200);
      expect(flood.notes.UNKNOWN_USER).to.be.greaterThan(0);
      expect(junkKeys.notes.status429).to.be.greaterThan(800);
      expect(junkKeys.notes.status404 ?? 0).to.be.at.most(60);
    } finally {
      clearInterval(controlTimer);
      clearInterval(rssTimer);
      clearInterval(healthTimer);
      aliceWs.terminate();
      bobWs.terminate();
    }
  });
});
