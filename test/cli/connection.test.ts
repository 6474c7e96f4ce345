/**
 * The client's WebSocket connection must not lose the frames a relay sends at once after the upgrade
 * (they can share a TCP packet with the 101 answer and be emitted before the caller attaches a handler).
 */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import { generate } from "selfsigned";
import { WebSocketServer } from "ws";
import { RelayConnection } from "../../cli/connection";
import { Context } from "../../cli/context";
import type { ServerFrame } from "../../protocol/wire";
import { freePort } from "../helpers/ports";

describe("cli/connection: frames sent right after the upgrade", function () {
  this.timeout(30_000);
  let home: string;
  let server: https.Server;
  let wss: WebSocketServer;
  let relay: string;

  before(async () => {
    home = mkdtempSync(path.join(os.tmpdir(), "chat-conn-"));
    const pems = await generate([{ name: "commonName", value: "eth-chat relay" }], { keyType: "ec", curve: "P-256", algorithm: "sha256" } as never);
    server = https.createServer({ cert: pems.cert, key: pems.private }, (_req, res) => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end("{}");
    });
    wss = new WebSocketServer({ noServer: true });
    server.on("upgrade", (request, socket, head) =>
      wss.handleUpgrade(request, socket, head, (ws) => {
        // In the same tick as the 101 answer, as a relay with an empty mailbox may do.
        ws.send(JSON.stringify({ type: "message", id: "early-message-1", from: "alice", envelope: "{}", receivedAt: 1 }));
        ws.send(JSON.stringify({ type: "ready", pending: 1 }));
      }),
    );
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    relay = `https://127.0.0.1:${port}`;
  });

  after(async () => {
    for (const client of wss.clients) client.terminate();
    wss.close();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    rmSync(home, { recursive: true, force: true });
  });

  it("hands the first handler every frame that arrived before it, in order", async () => {
    for (let attempt = 0; attempt < 10; attempt++) {
      const ctx = new Context({ relay, home, json: true }, {});
      const conn = await RelayConnection.open(ctx, { relay, username: "bob", token: "t", expiresAt: Date.now() + 60_000, keyIndex: 0, keys: [] });
      // Like `chat inbox`: a macrotask may pass before the caller listens.
      await new Promise((r) => setTimeout(r, 20));
      const frames: ServerFrame[] = [];
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no ready frame (got ${JSON.stringify(frames)})`)), 3_000);
        conn.onFrame((frame) => {
          frames.push(frame);
          if (frame.type === "ready") {
            clearTimeout(timer);
            resolve();
          }
        });
      });
      expect(frames.map((f) => f.type)).to.deep.equal(["message", "ready"]);
      await conn.close();
    }
  });
});
