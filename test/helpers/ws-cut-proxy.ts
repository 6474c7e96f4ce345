/**
 * A TCP proxy in front of a plain-HTTP relay that sees what clients send (WebSocket text frames, unmasked;
 * HTTP requests for /v2/groups/:id/messages) and, when armed, drops a socket in the middle of an append:
 * the next append frame reaches the relay, the relay's answer is swallowed and both sides are cut, as a
 * network drop right after the relay stored the message would do.
 */
import net from "node:net";

export interface CutProxy {
  url: string;
  /** every WebSocket text frame clients sent, parsed as JSON */
  frames: any[];
  /** the message ids of every POST /v2/groups/:id/messages clients sent */
  postedIds: string[];
  /** the next append frame's answer is swallowed and its socket cut */
  armCut(): void;
  /** the append frames whose socket was cut after the relay answered them */
  cut: any[];
  close(): Promise<void>;
}

/** Reads complete client frames (masked, per RFC 6455) from a growing buffer; returns each text payload. */
function readFrames(state: { buffer: Buffer }): string[] {
  const texts: string[] = [];
  for (;;) {
    const b = state.buffer;
    if (b.length < 2) return texts;
    const opcode = b[0] & 0x0f;
    let length = b[1] & 0x7f;
    let offset = 2;
    if (length === 126) {
      if (b.length < 4) return texts;
      length = b.readUInt16BE(2);
      offset = 4;
    } else if (length === 127) {
      if (b.length < 10) return texts;
      length = Number(b.readBigUInt64BE(2));
      offset = 10;
    }
    const masked = (b[1] & 0x80) !== 0;
    const mask = masked ? b.subarray(offset, offset + 4) : undefined;
    if (masked) offset += 4;
    if (b.length < offset + length) return texts;
    const payload = Buffer.from(b.subarray(offset, offset + length));
    if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
    if (opcode === 1) texts.push(payload.toString("utf8"));
    state.buffer = b.subarray(offset + length);
  }
}

export async function startCutProxy(targetUrl: string): Promise<CutProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let armed = false;
  const proxy: Omit<CutProxy, "url" | "close"> = { frames: [], postedIds: [], cut: [], armCut: () => (armed = true) };

  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    let websocket = false;
    let http = "";
    const frames = { buffer: Buffer.alloc(0) };
    /** an append was let through and its answer is being waited for, to be swallowed */
    let cutting: any;

    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      if (!websocket) {
        http += chunk.toString("latin1");
        if (/^GET [^\r\n]*\r\n(?:[^\r\n]+\r\n)*upgrade: websocket\r\n/im.test(http)) {
          websocket = true;
          http = "";
          return;
        }
        for (const match of http.matchAll(/POST \/v2\/groups\/[0-9a-f]{64}\/messages [^]*?\r\n\r\n\{"epoch":\d+,"id":"([A-Za-z0-9_-]+)"/g)) proxy.postedIds.push(match[1]);
        // What was scanned is dropped, up to an unfinished request.
        const last = http.lastIndexOf("POST ");
        http = last >= 0 && !/\{"epoch":\d+,"id":"[A-Za-z0-9_-]+"/.test(http.slice(last)) ? http.slice(last) : "";
        return;
      }
      frames.buffer = Buffer.concat([frames.buffer, chunk]);
      for (const text of readFrames(frames)) {
        let frame: any;
        try {
          frame = JSON.parse(text);
        } catch {
          continue;
        }
        proxy.frames.push(frame);
        if (armed && frame.type === "append" && !cutting) {
          armed = false;
          cutting = frame;
        }
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      if (cutting) {
        // Nothing reaches the client any more; once the relay's answer comes (sent when the message is
        // durable), the socket is cut.
        if (chunk.toString("utf8").includes('"type":"appended"')) {
          proxy.cut.push(cutting);
          drop();
        }
        return;
      }
      client.write(chunk);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    ...proxy,
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
