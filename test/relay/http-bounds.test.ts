/**
 * The relay process under slow and greedy clients, over real TLS on loopback: a slowloris is cut at the
 * header timeout, connections beyond the per-address cap are refused as they are accepted, and meanwhile a
 * control client from another address keeps getting answers. /metrics behind METRICS_TOKEN; the mailbox
 * depth gauge is counted at most once per refresh interval however often it is scraped.
 *
 * Loopback is 127.0.0.0/8, so the attackers connect from 127.0.0.2 and 127.0.0.3 and count as other
 * addresses than the control client (127.0.0.1).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import net from "node:net";
import tls from "node:tls";
import https from "node:https";
import { expect } from "chai";
import { Registry } from "prom-client";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { ConfigError, parseConfig } from "../../relay/config";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { mailboxDepthGauge } from "../../relay/ws/metrics";
import { startChain, type ChainFixture } from "../helpers/chain";

const METRICS_TOKEN = "metrics-token-0123456789abcdef";
const HEADERS_TIMEOUT_S = 2;
const PER_ADDRESS = 10;

/** A TLS connection from `localAddress`, trusting exactly the relay's certificate; resolves once the handshake is done. */
function connectTls(relay: RelayProcess, localAddress: string): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const tcp = net.connect({ host: "127.0.0.1", port: relay.port, localAddress });
    const socket = tls.connect({ socket: tcp, ca: relay.certificate!, checkServerIdentity: () => undefined });
    socket.once("secureConnect", () => resolve(socket));
    socket.once("error", reject);
    socket.once("close", () => reject(new Error("closed before the TLS handshake")));
  });
}

/** GET with headers from a chosen source address. */
function get(relay: RelayProcess, pathname: string, options: { headers?: Record<string, string>; localAddress?: string } = {}) {
  return new Promise<{ status: number; headers: Record<string, unknown>; body: string }>((resolve, reject) => {
    const req = https.request(
      `${relay.url}${pathname}`,
      { headers: options.headers, localAddress: options.localAddress, ca: relay.certificate!, checkServerIdentity: () => undefined, agent: false, timeout: 10_000 },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("request timed out")));
    req.end();
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("relay HTTPS bounds (relay process, TLS)", function () {
  this.timeout(120_000);
  let chain: ChainFixture;
  let dataDir: string;
  let relay: RelayProcess;

  before(async () => {
    chain = await startChain();
    dataDir = await mkdtemp(path.join(tmpdir(), "chat-http-bounds-"));
    relay = await startRelayProcess({
      rpcUrl: chain.anvil.url,
      contractAddress: chain.deployed.address,
      deployBlock: chain.deployed.deployBlock,
      relayerKey: chain.deployed.relayerKey,
      dataDir,
      env: {
        LOG_LEVEL: "warn",
        METRICS_TOKEN,
        HTTP_HEADERS_TIMEOUT_SECONDS: String(HEADERS_TIMEOUT_S),
        HTTP_REQUEST_TIMEOUT_SECONDS: "8",
        HTTP_MAX_CONNECTIONS_PER_ADDRESS: String(PER_ADDRESS),
      },
    });
  });
  after(async () => {
    await relay?.stop();
    await chain?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it("/metrics needs the bearer token when METRICS_TOKEN is set", async () => {
    const without = await get(relay, "/metrics");
    expect(without.status).to.equal(401);
    expect(without.headers["www-authenticate"]).to.match(/^Bearer/);
    expect(JSON.parse(without.body).error.code).to.equal("UNAUTHORIZED");
    expect((await get(relay, "/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}x` } })).status).to.equal(401);
    expect((await get(relay, "/metrics", { headers: { authorization: METRICS_TOKEN } })).status).to.equal(401);
    const withToken = await get(relay, "/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(withToken.status).to.equal(200);
    expect(withToken.body).to.match(/^chat_mailbox_depth 0$/m);
    // the token is a credential: never in the relay's output
    expect(relay.output()).not.to.include(METRICS_TOKEN);
  });

  it("a slowloris (headers a byte per second) is cut at the header timeout while a control client gets answers", async () => {
    const attackers = 8;
    const sockets = await Promise.all(Array.from({ length: attackers }, () => connectTls(relay, "127.0.0.2")));
    const started = performance.now();
    const cutAfterMs: number[] = [];
    const answers: string[] = [];
    const timers: NodeJS.Timeout[] = [];
    const allCut = Promise.all(
      sockets.map(
        (socket) =>
          new Promise<void>((resolve) => {
            socket.on("error", () => {});
            // Cut = the relay's 408 answer or its end of the connection, whichever comes first (the socket's
            // own close may wait for our next drip to meet the reset).
            let done = false;
            const cut = () => {
              if (done) return;
              done = true;
              cutAfterMs.push(performance.now() - started);
              resolve();
            };
            socket.once("data", (data) => {
              answers.push(String(data).split("\r\n")[0]);
              cut();
            });
            socket.once("end", cut);
            socket.once("close", cut);
            socket.write("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ");
            timers.push(setInterval(() => !done && socket.writable && socket.write("a"), 1_000));
          }),
      ),
    );
    const controlMs: number[] = [];
    let cut = false;
    void allCut.then(() => (cut = true));
    while (!cut && performance.now() - started < 15_000) {
      const t = performance.now();
      const answer = await get(relay, "/healthz");
      expect(answer.status).to.equal(200);
      controlMs.push(performance.now() - t);
      await sleep(200);
    }
    timers.forEach(clearInterval);
    expect(cut, "every slow socket was closed by the relay").to.equal(true);
    expect(cutAfterMs).to.have.length(attackers);
    expect(answers.every((line) => line === "HTTP/1.1 408 Request Timeout"), answers.join(", ")).to.equal(true);
    // Cut no earlier than the header timeout, and well before the request timeout (8 s): the header timeout did it.
    expect(Math.min(...cutAfterMs)).to.be.at.least(HEADERS_TIMEOUT_S * 1000 - 250);
    expect(Math.max(...cutAfterMs)).to.be.below(HEADERS_TIMEOUT_S * 1000 + 1_500);
    await Promise.all(sockets.map((s) => (s.closed ? undefined : new Promise((r) => s.once("close", r)))));
    expect(controlMs.length).to.be.at.least(3);
    console.log(
      `      slowloris: ${attackers} sockets cut after ${Math.round(Math.min(...cutAfterMs))}-${Math.round(Math.max(...cutAfterMs))} ms; ` +
        `control /healthz ${controlMs.length} answers, max ${Math.round(Math.max(...controlMs))} ms`,
    );
  });

  it("refuses connections beyond the per-address cap as they are accepted, while another address gets answers", async () => {
    const held = await Promise.all(Array.from({ length: PER_ADDRESS }, () => connectTls(relay, "127.0.0.3")));
    const closed = held.map(() => false);
    held.forEach((s, i) => {
      s.on("error", () => {});
      s.once("close", () => (closed[i] = true));
    });
    const refused = await connectTls(relay, "127.0.0.3").then(
      (s) => {
        s.destroy();
        return false;
      },
      () => true,
    );
    expect(closed.every((c) => !c), "the held connections were still open when the next one was refused").to.equal(true);
    expect(refused, "the connection beyond the cap was refused").to.equal(true);
    expect((await get(relay, "/healthz")).status).to.equal(200);
    expect((await get(relay, "/healthz", { localAddress: "127.0.0.4" })).status).to.equal(200);

    // Once they are gone, that address is served again.
    held.forEach((s) => s.destroy());
    await sleep(200);
    expect((await get(relay, "/healthz", { localAddress: "127.0.0.3" })).status).to.equal(200);
    const metrics = await get(relay, "/metrics", { headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
    expect(metrics.body).to.match(/^chat_relay_connections_refused_total\{cap="per_address"\} [1-9]\d*$/m);
  });
});

describe("mailbox depth gauge", function () {
  it("is right after puts and acks, and counts the store at most once per refresh however often it is scraped", async () => {
    const mailbox = createMemoryMailbox();
    let counts = 0;
    const registry = new Registry();
    const refreshMs = 1_000;
    mailboxDepthGauge(
      registry,
      () => {
        counts++;
        return mailbox.depth();
      },
      refreshMs,
    );
    const depth = async () => Number(/^chat_mailbox_depth (\d+)$/m.exec(await registry.metrics())![1]);
    const put = (id: string) => mailbox.put({ recipient: "bob", sender: "alice", id, envelope: "x", receivedAt: 1, expiresAt: 2 ** 50 });

    for (const id of ["a", "b", "c"]) await put(id);
    expect(await depth()).to.equal(3); // the first scrape waits for the first count
    await put("d");
    await mailbox.ack({ recipient: "bob", sender: "alice", id: "a" });
    await mailbox.ack({ recipient: "bob", sender: "alice", id: "b" });
    const scraping = performance.now();
    for (let i = 0; i < 50; i++) expect(await depth()).to.equal(3);
    expect(performance.now() - scraping, "the scrapes fit in the interval").to.be.below(refreshMs); // scrapes within the interval do not count
    expect(counts).to.equal(1);

    await sleep(refreshMs + 50);
    await depth(); // starts the count in the background
    await sleep(20);
    expect(await depth()).to.equal(2);
    expect(counts).to.equal(2);
  });
});

describe("bounds settings", function () {
  const base = {
    RPC_URL: "http://127.0.0.1:8545",
    CONTRACT_ADDRESS: "0x5FbDB2315678afecb367f032d93F642f64180aa3",
    PRIVATE_KEY: "0x" + "11".repeat(32),
    CREDENTIAL_PEPPER: "22".repeat(32),
    SESSION_SECRET: "33".repeat(32),
  };

  it("applies the documented defaults", () => {
    expect(parseConfig(base).bounds).to.deep.equal({
      mailboxQuotaMessages: 10_000,
      mailboxQuotaBytes: 64 * 1024 * 1024,
      mailboxFullRetryAfterSeconds: 60,
      metricsToken: null,
      metricsDepthRefreshMs: 15_000,
      httpHeadersTimeoutMs: 10_000,
      httpRequestTimeoutMs: 30_000,
      httpKeepAliveTimeoutMs: 5_000,
      httpMaxConnectionsPerAddress: 64,
      httpMaxConnections: 4096,
    });
  });

  it("keeps a v2 log entry every member has read for 30 days and purges every 10 minutes, unless told otherwise", () => {
    const defaults = parseConfig(base);
    expect([defaults.dsLogTtlMs, defaults.dsPurgeIntervalMs]).to.deep.equal([30 * 86_400_000, 600_000]);
    const set = parseConfig({ ...base, DS_LOG_TTL_DAYS: "0.5", DS_PURGE_INTERVAL_SECONDS: "60" });
    expect([set.dsLogTtlMs, set.dsPurgeIntervalMs]).to.deep.equal([43_200_000, 60_000]);
  });

  for (const [name, value, pattern] of [
    ["METRICS_TOKEN", "short", /METRICS_TOKEN: expected 16 to 256 printable/],
    ["METRICS_TOKEN", "with a space in the middle", /METRICS_TOKEN/],
    ["HTTP_HEADERS_TIMEOUT_SECONDS", "60", /HTTP_HEADERS_TIMEOUT_SECONDS: must not exceed HTTP_REQUEST_TIMEOUT_SECONDS/],
    ["HTTP_MAX_CONNECTIONS_PER_ADDRESS", "0", /HTTP_MAX_CONNECTIONS_PER_ADDRESS: expected 1 to/],
    ["MAILBOX_QUOTA_MESSAGES", "many", /MAILBOX_QUOTA_MESSAGES: expected a whole number/],
    ["DS_LOG_TTL_DAYS", "0", /DS_LOG_TTL_DAYS: expected a positive number/],
    ["DS_PURGE_INTERVAL_SECONDS", "0", /DS_PURGE_INTERVAL_SECONDS: expected 1 to 86400/],
  ] as const) {
    it(`rejects ${name}=${JSON.stringify(value)} naming it, without echoing a token`, () => {
      let error: unknown;
      try {
        parseConfig({ ...base, [name]: value });
      } catch (e) {
        error = e;
      }
      expect(error).to.be.instanceOf(ConfigError);
      expect((error as Error).message).to.match(pattern);
      if (name === "METRICS_TOKEN") expect((error as Error).message).not.to.include(value);
    });
  }
});
