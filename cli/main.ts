/**
 * `chat`: the command-line client. All cryptography happens here; every key is checked
 * against the chain over the client's own JSON-RPC before it is used. Data goes to stdout (one JSON
 * object per line with --json), messages and warnings to stderr; every error is one line on stderr and
 * a non-zero exit.
 */
import { Command, CommanderError, Option } from "commander";
import { Context, type GlobalOptions } from "./context";
import { describeError } from "./errors";

type Action = (ctx: Context, ...args: string[]) => Promise<void>;

/** Loads a command's module only when it runs (the MLS library, ethers and hash-wasm are slow to load). */
const lazy =
  <M extends Record<string, unknown>>(load: () => M, name: keyof M): Action =>
  (ctx, ...args) =>
    (load()[name] as unknown as Action)(ctx, ...args);

export function buildProgram(run: (action: Action, args: string[], options: GlobalOptions) => Promise<void>): Command {
  const program = new Command("chat")
    .description("End-to-end encrypted chat whose identities live on Ethereum. Run without a command for a menu.")
    .addOption(new Option("--relay <url>", "relay URL (default: CHAT_RELAY_URL or https://127.0.0.1:8443)"))
    .addOption(new Option("--rpc <url>", "your own JSON-RPC endpoint to check keys against (default: CHAT_RPC_URL or http://127.0.0.1:8545)"))
    .addOption(new Option("--contract <address>", "the ChatRegistry to trust on your chain (default: CHAT_CONTRACT, the known deployment, or npm start's local one)"))
    .addOption(new Option("--home <dir>", "folder for keys, session and history (default: CHAT_HOME or $XDG_CONFIG_HOME/eth-chat)"))
    .option("--json", "machine-readable output: one JSON object per line on stdout")
    .option("--password-stdin", "read the password from standard input (a second line for a new password)")
    .option("--insecure-relay", "accept a plain http:// relay off this machine (as CHAT_INSECURE_RELAY=1): anyone on the network can read and change the traffic")
    .option("--yes", "answer yes to confirmations (chat verify: the safety numbers were compared already)")
    .showHelpAfterError()
    .exitOverride();

  /** `options`: the command's own options, handed to the action with the global ones. */
  const command = (spec: string, description: string, action: Action, options: Option[] = [], parent: Command = program) => {
    const sub = parent.command(spec).description(description);
    for (const option of options) sub.addOption(option);
    return sub.action(async (...received: unknown[]) => {
      const args = received.flatMap((value) => (typeof value === "string" ? [value] : Array.isArray(value) ? value.filter((v): v is string => typeof v === "string") : []));
      await run(action, args, { ...program.opts<GlobalOptions>(), ...sub.opts<GlobalOptions>() });
    });
  };
  const groupOption = () => new Option("--group <name>", "a group (its name, or the start of its id) instead of a user");

  command("register <user>", "create a key on this device, register USER on chain, log in", lazy(() => require("./commands/register"), "register"));
  command("login <user>", "log in as USER on this device", lazy(() => require("./commands/login"), "login"));
  command("logout", "log out (forget the session and unlocked keys)", lazy(() => require("./commands/logout"), "logout"));
  command("send <user> [text]", "send one message to USER (with --group NAME: send TEXT to the group)", lazy(() => require("./commands/send"), "send"), [groupOption()]);
  command("inbox", "fetch, decrypt, check, save and print new messages", lazy(() => require("./commands/inbox"), "inbox"));
  command("talk [user]", "a live conversation with USER (with --group NAME: with the group)", lazy(() => require("./commands/talk"), "talk"), [groupOption()]);
  const group = program.command("group").description("named groups on MLS: create, add, remove, leave, rename, list, show");
  const groups = () => require("./commands/group");
  command("create <name>", "create the group NAME (with --with USER,...: those users in it at once)", lazy(groups, "create"), [new Option("--with <users>", "users to add at once, comma-separated")], group);
  command("add <name> <users...>", "add USERS (all their devices) to the group NAME", lazy(groups, "add"), [], group);
  command("remove <name> <users...>", "remove USERS from the group NAME", lazy(groups, "remove"), [], group);
  command("leave <name>", "leave the group NAME (another member commits the removal)", lazy(groups, "leave"), [], group);
  command("rename <name> <new>", "rename the group NAME to NEW for every member", lazy(groups, "rename"), [], group);
  command("list", "your groups: name, id, members, epoch (or left / removed)", lazy(groups, "listGroups"), [], group);
  command("show <name>", "the group's members with their key and device fingerprints, and its epoch", lazy(groups, "show"), [], group);
  const device = program.command("device").description("several devices per user: link a new one, approve it, list, revoke");
  const devices = () => require("./commands/device");
  command("link <user>", "on a new device (its own --home): ask to be linked to USER, show a code, wait for the approval", lazy(devices, "link"), [new Option("--name <name>", "a name for this device")], device);
  command("approve <code>", "on a device holding your key: approve the new device with CODE (add --yes after comparing fingerprints)", lazy(devices, "approve"), [], device);
  command("list", "your devices: fingerprint, name, linked, last seen, revoked", lazy(devices, "list"), [], device);
  command("revoke <id>", "revoke device ID: remove it from every conversation and rotate your key", lazy(devices, "revoke"), [], device);
  command("rotate-key", "replace your key (signed by the current key)", lazy(() => require("./commands/rotate-key"), "rotateKey"));
  command(
    "reset <user>",
    "new device: request a password-proven new key for USER, effective after the contract's delay (run again to finish)",
    lazy(() => require("./commands/reset"), "reset"),
  );
  command("cancel-reset [user]", "cancel a pending reset of your account (signed by this device's current key)", lazy(() => require("./commands/cancel-reset"), "cancelReset"));
  command("passwd", "change your password", lazy(() => require("./commands/passwd"), "passwd"));
  command("whois <user>", "USER's key history from the chain and your safety number", lazy(() => require("./commands/whois"), "whois"));
  command("verify <user>", "mark USER's current key as verified after comparing safety numbers", lazy(() => require("./commands/verify"), "verify"));
  command("status", "home folder, relay, chain, session, outbox", lazy(() => require("./commands/status"), "status"));
  command("trust-relay", "trust the relay's current TLS certificate (after a change)", lazy(() => require("./commands/trust-relay"), "trustRelay"));
  program.action(async () => {
    await run(lazy(() => require("./menu"), "menu"), [], program.opts<GlobalOptions>());
  });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  let json = false;
  const program = buildProgram(async (action, args, options) => {
    json = Boolean(options.json);
    const ctx = new Context(options);
    try {
      await action(ctx, ...args);
    } finally {
      ctx.close();
    }
  });
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed by commander
      return error.exitCode;
    }
    const { code, message } = describeError(error);
    process.stderr.write(`chat: ${code}: ${message}\n`);
    if (json) process.stdout.write(`${JSON.stringify({ type: "error", code, message })}\n`);
    exitCode = 1;
  }
  return exitCode;
}

if (require.main === module || process.env.CHAT_CLI_MAIN === "1") {
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
      // Sockets and the chain provider are closed; anything left (a stuck timer) must not hold the exit.
      setTimeout(() => process.exit(code), 200).unref();
    },
    (error) => {
      process.stderr.write(`chat: INTERNAL: ${describeError(error).message}\n`);
      process.exit(1);
    },
  );
}
