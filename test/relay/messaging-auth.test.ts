import { expect } from "chai";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { createMemoryMailbox } from "../../relay/storage/mailbox-memory";
import { connectClient, connectReady, startTestRelay, tokenFor, type TestRelay } from "./messaging-helpers";

/** The WebSocket upgrade answers 401 (with an ErrorBody) before any socket is accepted. */
describe("messaging: authentication on upgrade", function () {
  let relay: TestRelay;

  before(async () => {
    relay = await startTestRelay({ mailbox: createMemoryMailbox() });
  });
  after(async () => {
    await relay.close();
  });

  async function refused(token: string | undefined) {
    try {
      const client = await connectClient(relay.url, token);
      await client.close();
    } catch (error: any) {
      return error as { status: number; body: any; headers: http.IncomingHttpHeaders };
    }
    throw new Error("the upgrade was accepted");
  }

  it("refuses a missing token with 401 UNAUTHORIZED", async () => {
    const e = await refused(undefined);
    expect(e.status).to.equal(401);
    expect(e.body.error.code).to.equal("UNAUTHORIZED");
    expect(e.headers["www-authenticate"]).to.match(/^Bearer /);
  });

  it("refuses an altered token", async () => {
    const token = tokenFor("alice");
    const [payload, mac] = token.split(".");
    // Claim to be someone else while keeping alice's MAC.
    const forged = Buffer.from(Buffer.from(payload, "base64url").toString().replace("alice", "mallo")).toString("base64url");
    expect((await refused(`${forged}.${mac}`)).status).to.equal(401);
    const flipped = mac.slice(0, -2) + (mac.endsWith("AA") ? "BB" : "AA");
    expect((await refused(`${payload}.${flipped}`)).status).to.equal(401);
    expect((await refused("not-a-token")).status).to.equal(401);
  });

  it("refuses an expired token with SESSION_EXPIRED", async () => {
    const e = await refused(tokenFor("alice", { now: Date.now() - 10_000, ttlMs: 1_000 }));
    expect(e.status).to.equal(401);
    expect(e.body.error.code).to.equal("SESSION_EXPIRED");
  });

  it("refuses a token made with another secret", async () => {
    const e = await refused(tokenFor("alice", { secret: randomBytes(32) }));
    expect(e.status).to.equal(401);
    expect(e.body.error.code).to.equal("UNAUTHORIZED");
  });

  it("answers 404 on other paths and accepts a valid token on /v1/ws", async () => {
    try {
      await connectClient(relay.url.replace("/v1/ws", "/v1/other"), tokenFor("alice"));
      throw new Error("accepted");
    } catch (error: any) {
      expect(error.status).to.equal(404);
    }
    const { client, ready } = await connectReady(relay.url, "alice");
    expect(ready).to.deep.equal({ type: "ready", pending: 0 });
    expect(relay.messaging.connectionCount()).to.equal(1);
    await client.close();
  });

  it("closes with 4001 when the session expires while connected", async () => {
    const client = await connectClient(relay.url, tokenFor("alice", { ttlMs: 300 }));
    const { code } = await client.closed;
    expect(code).to.equal(4001);
  });
});
