/** Plain-text transports: an http:// relay off this machine is refused unless asked for; the rest are warned about. */
import { expect } from "chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { login } from "../../cli/commands/login";
import { register } from "../../cli/commands/register";
import { status } from "../../cli/commands/status";
import { checkRelayTransport, checkRpcTransport } from "../../cli/connection";
import { Context, type GlobalOptions } from "../../cli/context";
import { buildProgram } from "../../cli/main";
import { Output } from "../../cli/output";
import { isChatError } from "../../protocol/errors";

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

  describe("every command, through the client's context", () => {
    let home: string;
    before(() => (home = mkdtempSync(path.join(os.tmpdir(), "chat-transport-"))));
    after(() => rmSync(home, { recursive: true, force: true }));
    const INSECURE_RELAY = "http://relay.example:8080";

    /** Runs `action` and returns the code of the ChatError it fails with. */
    const failure = async (action: () => Promise<unknown>) => {
      try {
        await action();
      } catch (error) {
        if (isChatError(error)) return { code: error.code, message: error.message };
        throw error;
      }
      throw new Error("expected a failure");
    };

    it("register, login and status refuse an http:// relay off this machine before any network use", async () => {
      // relay.example does not resolve: reaching the network would fail with another code than USAGE.
      const ctx = new Context({ relay: INSECURE_RELAY, rpc: "http://127.0.0.1:1", home, passwordStdin: true }, {});
      try {
        for (const run of [() => register(ctx, "alice"), () => login(ctx, "alice"), () => status(ctx)]) {
          const { code, message } = await failure(run);
          expect(code).to.equal("USAGE");
          expect(message).to.match(/refusing the unencrypted relay http:\/\/relay.example:8080.*--insecure-relay/);
        }
      } finally {
        ctx.close();
      }
    });

    it("--insecure-relay and CHAT_INSECURE_RELAY=1 accept it", async () => {
      const options: GlobalOptions[] = [];
      const program = buildProgram(async (_action, _args, opts) => void options.push(opts));
      await program.parseAsync(["node", "chat", "--insecure-relay", "--relay", INSECURE_RELAY, "status"]);
      expect(options[0]).to.include({ insecureRelay: true, relay: INSECURE_RELAY });
      for (const ctx of [new Context({ ...options[0], home }, {}), new Context({ relay: INSECURE_RELAY, home }, { CHAT_INSECURE_RELAY: "1" })]) {
        expect(ctx.insecureRelay).to.equal(true);
        expect(ctx.relay.origin).to.equal(INSECURE_RELAY);
        ctx.close();
      }
    });
  });
});
