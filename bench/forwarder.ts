/**
 * The baseline of bench:relay: the least a WebSocket relay can do with the same frames. `ws` over TLS
 * (same certificate, same ws options as the relay: no compression), the user named by the `user` query
 * parameter (no token, no check), a send frame parsed and forwarded as a message frame to the
 * recipient's connections and answered "accepted"; acks ignored; nothing stored. Each socket is corked for
 * the rest of the event loop's turn, as the relay's are. Runs in a process of
 * its own like the relay. Env: TLS_CERT, TLS_KEY. Prints {"ready":true,"port":N} when listening.
 */
import { readFileSync } from "node:fs";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { WebSocket, WebSocketServer } from "ws";
import { WS_PATH } from "../protocol/wire";
import { corkForThisTurn, transportOf } from "../relay/ws/cork";

const server = https.createServer({ cert: readFileSync(process.env.TLS_CERT!), key: readFileSync(process.env.TLS_KEY!), minVersion: "TLSv1.2" });
const wss = new WebSocketServer({ server, path: WS_PATH, perMessageDeflate: false, clientTracking: false, maxPayload: 64 * 1024 });
const byUser = new Map<string, Set<WebSocket>>();

/** As the relay writes: the frames a socket gets in one turn leave in one write. */
function send(ws: WebSocket, text: string): void {
  const socket = transportOf(ws);
  if (socket) corkForThisTurn(socket);
  ws.send(text);
}

wss.on("connection", (ws, req) => {
  const user = new URL(req.url ?? "/", "https://forwarder").searchParams.get("user") ?? "";
  let mine = byUser.get(user);
  if (!mine) byUser.set(user, (mine = new Set()));
  mine.add(ws);
  ws.on("close", () => {
    mine!.delete(ws);
    if (mine!.size === 0) byUser.delete(user);
  });
  ws.on("error", () => undefined);
  ws.on("message", (data) => {
    let frame: any;
    try {
      frame = JSON.parse(data.toString());
    } catch {
      return;
    }
    if (frame?.type !== "send") return;
    const text = JSON.stringify({ type: "message", id: frame.id, from: user, envelope: frame.envelope, receivedAt: Date.now() });
    for (const peer of byUser.get(frame.to) ?? []) send(peer, text);
    send(ws, JSON.stringify({ type: "accepted", id: frame.id, status: "stored" }));
  });
  ws.send(JSON.stringify({ type: "ready", pending: 0 }));
});

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ ready: true, port: (server.address() as AddressInfo).port, pid: process.pid })}\n`);
});
process.once("SIGTERM", () => {
  for (const set of byUser.values()) for (const ws of set) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2_000).unref();
});
