/** Plain-text transports: an http:// relay off this machine is refused unless asked for; the rest are warned about. */
import { expect } from "chai";
import { PassThrough } from "node:stream";
import { checkRelayTransport, checkRpcTransport } from "../../cli/connection";
import { Output } from "../../cli/output";

function output() {
  const stderr = new PassThrough();
  let text = "";
  stderr.on("data", (chunk) => (text += chunk));
  return { out: new Output(false, new PassThrough() as unknown as NodeJS.WriteStream, stderr as unknown as NodeJS.WriteStream), text: () => text };
}

describe("relay and chain transports", () => {
  it("https passes silently; http off this machine is refused with USAGE unless CHAT_INSECURE_RELAY=1, then warned", () => {
    const { out, text } = output();
    checkRelayTransport(new URL("https://relay.example:8443"), out, {});
    expect(text()).to.equal("");
    expect(() => checkRelayTransport(new URL("http://relay.example:8080"), out, {})).to.throw(/refusing the unencrypted relay http:\/\/relay.example:8080/);
    checkRelayTransport(new URL("http://relay.example:8080"), out, { CHAT_INSECURE_RELAY: "1" });
    expect(text()).to.include("WARNING: the relay http://relay.example:8080 is plain http");
  });

  it("http on loopback is allowed and warned about once", () => {
    const { out, text } = output();
    checkRelayTransport(new URL("http://127.0.0.1:18080"), out, {});
    checkRelayTransport(new URL("http://127.0.0.1:18080"), out, {});
    expect(text().split("plain http").length - 1).to.equal(1);
  });

  it("a chain RPC over plain http off this machine is warned about; loopback and https are not", () => {
    const { out, text } = output();
    checkRpcTransport("http://127.0.0.1:8545", out);
    checkRpcTransport("https://rpc.example", out);
    expect(text()).to.equal("");
    checkRpcTransport("http://rpc.example:8545", out);
    expect(text()).to.include("WARNING: the chain RPC http://rpc.example:8545 is plain http off this machine");
  });
});
