/**
 * Trust on first use of the relay's certificate, over real TLS: the first contact pins it, a changed
 * certificate stops the client with CERTIFICATE_CHANGED, `chat trust-relay` re-trusts explicitly.
 */
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { generate } from "selfsigned";
import { trustRelay } from "../../cli/commands/trust-relay";
import { Context } from "../../cli/context";
import { InfoResponse } from "../../protocol/wire";
import { freePort } from "../helpers/ports";
import { expect, expectRejectedCode } from "../helpers/chai";

async function certificate() {
  return generate([{ name: "commonName", value: "eth-chat relay" }], { keyType: "ec", curve: "P-256", algorithm: "sha256" } as never);
}

function serve(port: number, pems: { cert: string; private: string }): Promise<https.Server> {
  const server = https.createServer({ cert: pems.cert, key: pems.private }, (_req, res) => {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ protocolVersion: 1, chainId: "31337", contractAddress: "0x" + "11".repeat(20), maxFrameBytes: 65536, mailboxTtlMs: 1 }));
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}

const close = (server?: https.Server) =>
  new Promise<void>((resolve) => {
    if (!server) return resolve();
    server.closeAllConnections();
    server.close(() => resolve());
  });

describe("cli/relay-tls: the relay's certificate is pinned on first use", function () {
  this.timeout(30_000);
  let home: string;
  let server: https.Server | undefined;

  before(() => {
    home = mkdtempSync(path.join(os.tmpdir(), "chat-tls-"));
  });
  after(async () => {
    await close(server);
    rmSync(home, { recursive: true, force: true });
  });

  it("pins on first use, refuses a changed certificate, and trusts it again only through trust-relay", async () => {
    const [first, second] = [await certificate(), await certificate()];
    const port = await freePort();
    const relay = `https://127.0.0.1:${port}`;
    const context = () => new Context({ relay, home, json: true }, {});
    server = await serve(port, first);

    const ctx = context();
    expect(await ctx.relay.get("/v1/info", InfoResponse)).to.include({ chainId: "31337" });
    const pinned = ctx.relayPins.get(new URL(relay).origin)!;
    expect(pinned.certSha256).to.equal(new X509Certificate(first.cert).fingerprint256);
    expect(ctx.home.mode(ctx.home.path("relays.json"))).to.equal(0o600);

    // same certificate: accepted again
    expect(await context().relay.get("/v1/info", InfoResponse)).to.include({ chainId: "31337" });

    // the relay (or someone in between) now shows another certificate
    await close(server);
    server = await serve(port, second);
    await expectRejectedCode(context().relay.get("/v1/info", InfoResponse), "CERTIFICATE_CHANGED", /chat trust-relay/);
    // still refused on the next run: nothing was re-pinned silently
    await expectRejectedCode(context().relay.get("/v1/info", InfoResponse), "CERTIFICATE_CHANGED");

    const trusting = context();
    await trustRelay(trusting);
    expect(trusting.relayPins.get(new URL(relay).origin)?.certSha256).to.equal(new X509Certificate(second.cert).fingerprint256);
    expect(await context().relay.get("/v1/info", InfoResponse)).to.include({ chainId: "31337" });
  });
});
