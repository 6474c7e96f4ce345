/**
 * The interactive menu on a real pseudo-terminal (script(1)), against a real relay and anvil chain: the
 * choices a person needs (cancelling a pending reset among them), the login check before asking who,
 * verify asking whether the safety numbers matched, hints that name menu choices, and log out.
 */
import { expect } from "chai";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { menuHint } from "../../cli/menu";
import { startAnvil, type AnvilNode } from "../helpers/anvil";
import { deployRegistry } from "../helpers/registry";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { runChat } from "../helpers/chat-process";

const ROOT = path.resolve(__dirname, "../..");
const CLIENT_ENV = { CHAT_INSECURE_FAST_KDF: "1" };

describe("chat menu (pseudo-terminal, real relay and chain)", function () {
  this.timeout(180_000);
  let anvil: AnvilNode;
  let relay: RelayProcess;
  /** the ChatRegistry this test deployed: the one its users trust (--contract) */
  let contract: string;
  let tmp: string;
  const children: ChildProcess[] = [];
  const home = (who: string) => path.join(tmp, who);

  /** `chat` alone on a pseudo-terminal; `next(text)` waits for text after the previous wait. */
  function openMenu(who: string) {
    const command = [process.execPath, path.join(ROOT, "bin/chat.js"), "--home", home(who), "--relay", relay.url, "--rpc", anvil.url, "--contract", contract].map((p) => `'${p}'`).join(" ");
    const child = spawn("script", ["-qec", command, "/dev/null"], { cwd: ROOT, env: { PATH: process.env.PATH ?? "", HOME: home(who), TERM: "dumb", ...CLIENT_ENV } });
    children.push(child);
    let screen = "";
    let at = 0;
    child.stdout!.on("data", (chunk) => (screen += chunk));
    return {
      screen: () => screen,
      /** what was shown since the last wait */
      since: (from: number) => screen.slice(from),
      get at() {
        return at;
      },
      async next(text: string): Promise<number> {
        const started = Date.now();
        while (screen.indexOf(text, at) < 0) {
          if (Date.now() - started > 60_000 || child.exitCode !== null) throw new Error(`menu never showed ${JSON.stringify(text)}:\n${screen.slice(at)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        const before = at;
        at = screen.indexOf(text, at) + text.length;
        return before;
      },
      type: (line: string) => child.stdin!.write(`${line}\r`),
      exited: () => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once("exit", resolve))),
    };
  }

  before(async () => {
    anvil = await startAnvil();
    const registry = await deployRegistry({ rpcUrl: anvil.url });
    contract = registry.address;
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-menu-"));
    relay = await startRelayProcess({
      rpcUrl: anvil.url,
      contractAddress: registry.address,
      deployBlock: registry.deployBlock,
      relayerKey: registry.relayerKey,
      dataDir: path.join(tmp, "relay"),
    });
    const register = (who: string) =>
      runChat({ home: home(who), relay: relay.url, rpc: anvil.url, args: ["--password-stdin", "register", who], input: `${who}-Secret-pw-1\n`, env: CLIENT_ENV });
    for (const result of await Promise.all([register("alice"), register("bob")])) expect(result.code, result.stderr).to.equal(0);
  });

  after(async () => {
    for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
    await relay?.stop();
    await anvil?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("logged out: offers Log in and Register, and checks the login before asking who to talk to", async () => {
    const menu = openMenu("carol");
    await menu.next("(not logged in)");
    await menu.next("1) Log in");
    await menu.next("2) Register a new user");
    await menu.next("3) Chat with someone");
    await menu.next("5) Cancel a pending reset of your account");
    await menu.next("Choose:");
    menu.type("3");
    const from = await menu.next(`You are not logged in: choose "Log in" (or "Register a new user") first.`);
    expect(menu.since(from)).to.not.include("Talk with");
    await menu.next("Choose:");
    menu.type("q");
    expect(await menu.exited()).to.equal(0);
  });

  it("logged in: verify shows the safety number and asks; who is, status, hints as menu choices, log out", async () => {
    const menu = openMenu("alice");
    await menu.next("(logged in as alice)");
    for (const label of ["1) Chat with someone", "2) Read inbox", "3) Who is", "4) Verify a contact", "5) Status", "6) Rotate key", "7) Change password", "8) Log out", "9) Cancel a pending reset of your account", "q) Quit"]) {
      await menu.next(label);
    }
    await menu.next("Choose:");

    // A no keeps the key unverified.
    menu.type("4");
    await menu.next("Verify (username):");
    menu.type("bob");
    await menu.next("Safety number of alice and bob");
    await menu.next("Does it match what bob sees? [y/N]");
    menu.type("n");
    await menu.next("chat: CANCELLED: not verified");
    await menu.next("Choose:");
    // A yes marks it.
    menu.type("4");
    await menu.next("Verify (username):");
    menu.type("bob");
    await menu.next("Does it match what bob sees? [y/N]");
    menu.type("y");
    await menu.next("Marked bob's key #0");
    await menu.next("Choose:");
    menu.type("3");
    await menu.next("Username:");
    menu.type("bob");
    await menu.next("Verified by you.");
    await menu.next("Choose:");

    // A capitalised name: the error suggests the lower-case spelling.
    menu.type("3");
    await menu.next("Username:");
    menu.type("Bob");
    await menu.next("chat: INVALID_USERNAME:");
    await menu.next("did you mean bob?");
    await menu.next("Choose:");

    menu.type("5");
    await menu.next("alice");
    await menu.next("Choose:");

    menu.type("8");
    await menu.next("(not logged in)");
    await menu.next("Choose:");
    menu.type("q");
    expect(await menu.exited()).to.equal(0);
  });

  it("hints in the menu name menu choices, not shell commands", () => {
    expect(menuHint("not logged in: run chat login USER (or chat register USER)")).to.equal('not logged in: choose "Log in" (or choose "Register a new user")');
    expect(menuHint("when the numbers match, run chat verify bob")).to.equal('when the numbers match, choose "Verify a contact (compare safety numbers)"');
    expect(menuHint("If you did not request it, run `chat cancel-reset` NOW from this device, then change your password (chat passwd).")).to.equal(
      'If you did not request it, choose "Cancel a pending reset of your account" NOW from this device, then change your password (choose "Change password").',
    );
  });
});
