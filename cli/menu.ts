/**
 * `chat` alone: an interactive menu that a person follows on screen, no commands to learn. Each entry
 * runs the same code as the matching command; what it offers depends on whether you are logged in, and
 * its hints name menu choices rather than shell commands.
 */
import readline from "node:readline/promises";
import { ChatError } from "../protocol/errors";
import type { Context } from "./context";
import { describeError } from "./errors";
import { currentSession } from "./session";

export interface MenuEntry {
  label: string;
  run: (ctx: Context, name?: string) => Promise<void>;
  /** the question for a username, when the entry needs one */
  asks?: string;
  /** needs a session: checked before asking anything */
  loggedIn?: boolean;
}

const command = (file: string, name: string) => (ctx: Context, arg?: string) => require(`./commands/${file}`)[name](ctx, arg);

/** A second question after the entry's own (its readline is closed by then); undefined when input ends. */
async function askMore(question: string): Promise<string | undefined> {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    return (await rl.question(question)).trim();
  } catch {
    return undefined;
  } finally {
    rl.close();
  }
}

/** A group entry that needs users too: asks for them (comma-separated) after the group's name. */
const groupWithUsers = (name: string, question: string, optional = false) => async (ctx: Context, group?: string) => {
  const users = await askMore(question);
  if (users === undefined) return;
  const groups = require("./commands/group");
  if (name === "create") return groups.create(ctx, group ?? "", users || undefined);
  if (!users && !optional) throw new ChatError("USAGE", "name at least one user");
  return groups[name](ctx, group ?? "", users);
};

/** Every choice, by the name a person sees. */
const ENTRIES: Record<string, MenuEntry> = {
  chat: { label: "Chat with someone", run: command("talk", "talk"), asks: "Talk with (username): ", loggedIn: true },
  inbox: { label: "Read inbox", run: command("inbox", "inbox"), loggedIn: true },
  whois: { label: "Who is (keys and safety number)", run: command("whois", "whois"), asks: "Username: " },
  verify: { label: "Verify a contact (compare safety numbers)", run: command("verify", "verify"), asks: "Verify (username): ", loggedIn: true },
  status: { label: "Status", run: command("status", "status") },
  rotate: { label: "Rotate key", run: command("rotate-key", "rotateKey"), loggedIn: true },
  passwd: { label: "Change password", run: command("passwd", "passwd"), loggedIn: true },
  logout: { label: "Log out", run: command("logout", "logout"), loggedIn: true },
  login: { label: "Log in", run: command("login", "login"), asks: "Username: " },
  register: { label: "Register a new user", run: command("register", "register"), asks: "Username to register: " },
  reset: { label: "Set up a new device for a user (reset)", run: command("reset", "reset"), asks: "Username: " },
  cancelReset: {
    label: "Cancel a pending reset of your account",
    // An empty answer means the logged-in user.
    run: (ctx, name) => command("cancel-reset", "cancelReset")(ctx, name || undefined),
    asks: "Username (Enter: the logged-in one): ",
  },
  trust: { label: "Trust the relay's new certificate", run: command("trust-relay", "trustRelay") },
  groups: { label: "Your groups", run: command("group", "listGroups"), loggedIn: true },
  groupShow: { label: "Show a group's members and fingerprints", run: command("group", "show"), asks: "Group (name or id start): ", loggedIn: true },
  groupCreate: { label: "Create a group", run: groupWithUsers("create", "With (usernames, comma-separated; Enter: nobody yet): ", true), asks: "Group name: ", loggedIn: true },
  groupAdd: { label: "Add people to a group", run: groupWithUsers("add", "Add (usernames, comma-separated): "), asks: "Group (name or id start): ", loggedIn: true },
  groupRemove: { label: "Remove people from a group", run: groupWithUsers("remove", "Remove (usernames, comma-separated): "), asks: "Group (name or id start): ", loggedIn: true },
  groupLeave: { label: "Leave a group", run: command("group", "leave"), asks: "Leave (group name or id start): ", loggedIn: true },
  devices: { label: "Your devices", run: command("device", "list"), loggedIn: true },
  deviceApprove: { label: "Approve a new device (its code)", run: command("device", "approve"), asks: "Code shown on the new device: ", loggedIn: true },
};

/** The choices in order: what a logged-in person uses most comes first. */
export function menuEntries(loggedIn: boolean): MenuEntry[] {
  const keys = loggedIn
    ? ["chat", "inbox", "whois", "verify", "status", "rotate", "passwd", "logout", "cancelReset", "groups", "groupShow", "groupCreate", "groupAdd", "groupRemove", "groupLeave", "devices", "deviceApprove", "login", "register"]
    : ["login", "register", "chat", "reset", "cancelReset", "whois", "status", "trust"];
  return keys.map((key) => ENTRIES[key]);
}

/** Command names in a message, as the menu choices that do the same. */
const CHOICE_OF: Record<string, string> = {
  talk: ENTRIES.chat.label,
  send: ENTRIES.chat.label,
  inbox: ENTRIES.inbox.label,
  whois: ENTRIES.whois.label,
  verify: ENTRIES.verify.label,
  status: ENTRIES.status.label,
  "rotate-key": ENTRIES.rotate.label,
  passwd: ENTRIES.passwd.label,
  logout: ENTRIES.logout.label,
  login: ENTRIES.login.label,
  register: ENTRIES.register.label,
  reset: ENTRIES.reset.label,
  "cancel-reset": ENTRIES.cancelReset.label,
  "trust-relay": ENTRIES.trust.label,
};

/** "run chat login USER" becomes `choose "Log in"`: in the menu, a shell command is the wrong hint. */
export function menuHint(message: string): string {
  return message.replace(/\b(?:run |use )?`?chat ([a-z-]+)(?: (?:[A-Za-z0-9_]+|USER))?`?/g, (whole, name: string) =>
    CHOICE_OF[name] ? `choose "${CHOICE_OF[name]}"` : whole,
  );
}

export async function menu(ctx: Context): Promise<void> {
  if (!process.stdin.isTTY) {
    ctx.out.info("chat: no terminal for the menu; use a command (chat --help)", { always: true });
    return;
  }
  // Warnings raised inside a choice (a pending reset of your account...) name menu choices too.
  ctx.out.adviceFor = menuHint;
  for (;;) {
    const session = currentSession(ctx.sessions, ctx.relay.origin);
    const entries = menuEntries(Boolean(session));
    process.stderr.write(`\neth-chat${session ? ` (logged in as ${session.username})` : " (not logged in)"}\n`);
    entries.forEach((entry, i) => process.stderr.write(`  ${i + 1}) ${entry.label}\n`));
    process.stderr.write("  q) Quit\n");
    const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
    let choice: string;
    try {
      choice = (await rl.question("Choose: ")).trim().toLowerCase();
    } catch {
      return; // input closed (Ctrl-D)
    }
    if (choice === "q" || choice === "quit") {
      rl.close();
      return;
    }
    const entry = entries[Number(choice) - 1];
    if (!entry) {
      rl.close();
      process.stderr.write("Choose a number from the list, or q to quit.\n");
      continue;
    }
    // Checked before asking who: a person should not type a name only to hear they are logged out.
    if (entry.loggedIn && !session) {
      rl.close();
      process.stderr.write(`You are not logged in: choose "${ENTRIES.login.label}" (or "${ENTRIES.register.label}") first.\n`);
      continue;
    }
    let name: string | undefined;
    if (entry.asks) name = (await rl.question(entry.asks)).trim();
    rl.close();
    try {
      await entry.run(ctx, name);
    } catch (error) {
      const { code, message } = describeError(error);
      process.stderr.write(`chat: ${code}: ${menuHint(message)}\n`);
    }
  }
}
