/**
 * `npm run demo`: a scripted conversation on the running stack (`npm start` in another terminal), shown as
 * the commands a person would type and what they print. Two users register, exchange messages, one rotates
 * its key and the other is warned, and the key history is shown from the chain.
 * The demo's passwords are generated here and never printed; each run uses fresh usernames.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import path from "node:path";

const ROOT = path.resolve(__dirname, "..");
const DATA_DIR = path.resolve(ROOT, process.env.DATA_DIR ?? "data");
const suffix = randomBytes(3).toString("hex");
const users = { alice: `alice_${suffix}`, bob: `bob_${suffix}` };
const passwords = { alice: randomBytes(12).toString("base64url"), bob: randomBytes(12).toString("base64url") };
const homes = {
  alice: path.join(DATA_DIR, "demo", users.alice),
  bob: path.join(DATA_DIR, "demo", users.bob),
};
const extra = process.argv.slice(2); // e.g. --relay URL --rpc URL

function step(title: string): void {
  process.stdout.write(`\n\x1b[1m== ${title}\x1b[0m\n`);
}

/** Runs the real CLI and shows its stdout and stderr interleaved, as a terminal would. */
async function chat(who: "alice" | "bob", args: string[], withPassword = false): Promise<void> {
  const shown = ["chat", ...args].join(" ");
  process.stdout.write(`\n${who}$ ${shown}${withPassword ? "   (password typed at the prompt)" : ""}\n`);
  const child = spawn(process.execPath, [path.join(ROOT, "bin", "chat.js"), "--home", homes[who], ...extra, ...(withPassword ? ["--password-stdin"] : []), ...args], {
    cwd: ROOT,
    stdio: ["pipe", "pipe", "pipe"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  child.stdin.end(withPassword ? `${passwords[who]}\n` : "");
  const code = await new Promise<number | null>((resolve) => child.once("close", resolve));
  process.stdout.write(indent(output));
  if (code !== 0) {
    process.stderr.write(`\ndemo: "${shown}" failed (exit ${code}). Is the stack running? Start it with: npm start\n`);
    process.exit(1);
  }
}

function indent(text: string): string {
  return text ? text.replace(/^/gm, "    ").replace(/\s*$/, "\n") : "";
}

async function main(): Promise<void> {
  mkdirSync(homes.alice, { recursive: true, mode: 0o700 });
  mkdirSync(homes.bob, { recursive: true, mode: 0o700 });

  step("1. Two people register: each key is made on their machine and its registration lands on chain");
  await chat("alice", ["register", users.alice], true);
  await chat("bob", ["register", users.bob], true);

  step("2. Alice writes to Bob while he is offline; the relay keeps only ciphertext in its mailbox");
  await chat("alice", ["send", users.bob, "Hi Bob! This message is encrypted for your key on chain."]);
  await chat("alice", ["send", users.bob, "The relay cannot read it."]);

  step("3. Bob reads his inbox: each message is decrypted and its signature checked against Alice's key on chain");
  await chat("bob", ["inbox"]);
  await chat("bob", ["send", users.alice, "Hi Alice, got both."]);
  await chat("alice", ["inbox"]);

  step("4. Bob rotates his key (signed by his current key, verified by the contract)");
  await chat("bob", ["rotate-key"], true);

  step("5. Alice writes again: her client notices the new key on chain and warns her before sending");
  await chat("alice", ["send", users.bob, "Did you get a new key?"]);
  await chat("bob", ["inbox"]);

  step("6. The whole key history of Bob, read from the chain, and the safety number Alice and Bob can compare");
  await chat("alice", ["whois", users.bob]);

  process.stdout.write(`\nDemo done. The users' folders are under ${path.join(DATA_DIR, "demo")}.\n`);
}

void main();
