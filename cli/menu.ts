/**
 * `chat` alone: an interactive menu, as the original's "follow the on-screen instructions". Each entry
 * runs the same code as the matching command.
 */
import readline from "node:readline/promises";
import type { Context } from "./context";
import { describeError } from "./errors";

export async function menu(ctx: Context): Promise<void> {
  if (!process.stdin.isTTY) {
    ctx.out.info("chat: no terminal for the menu; use a command (chat --help)", { always: true });
    return;
  }
  const entries: [string, (name?: string) => Promise<void>, string | undefined][] = [
    ["Register", (name) => require("./commands/register").register(ctx, name), "Username to register: "],
    ["Log in", (name) => require("./commands/login").login(ctx, name), "Username: "],
    ["Chat", (name) => require("./commands/talk").talk(ctx, name), "Talk with (username): "],
    ["Read inbox", () => require("./commands/inbox").inbox(ctx), undefined],
    ["Rotate key", () => require("./commands/rotate-key").rotateKey(ctx), undefined],
    ["Who is", (name) => require("./commands/whois").whois(ctx, name), "Username: "],
    ["Quit", async () => undefined, undefined],
  ];
  for (;;) {
    const session = ctx.sessions.read();
    process.stderr.write(`\neth-chat${session ? ` (logged in as ${session.username})` : ""}\n`);
    entries.forEach(([label], i) => process.stderr.write(`  ${i + 1}) ${label}\n`));
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    const choice = (await rl.question("Choose: ")).trim();
    const entry = entries[Number(choice) - 1];
    let name: string | undefined;
    if (entry?.[2]) name = (await rl.question(entry[2])).trim();
    rl.close();
    if (!entry) {
      process.stderr.write("Choose a number from the list.\n");
      continue;
    }
    if (entry[0] === "Quit") return;
    try {
      await entry[1](name);
    } catch (error) {
      const { code, message } = describeError(error);
      process.stderr.write(`chat: ${code}: ${message}\n`);
    }
  }
}
