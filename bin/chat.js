#!/usr/bin/env node
// The `chat` command: runs cli/main.ts through tsx's CommonJS loader (no build step), so that
// `npx chat ...` works from the repository.
"use strict";
const { existsSync } = require("node:fs");
const path = require("node:path");

// Contract calls go through the TypeChain bindings that `hardhat compile` generates (not kept in git):
// without them say what to run, in one line, instead of a module-not-found stack trace.
if (!existsSync(path.join(__dirname, "..", "typechain-types", "index.ts"))) {
  process.stderr.write("chat: the contract bindings (typechain-types/) are missing: run npm run compile\n");
  process.exit(1);
}

require("tsx/cjs/api").register();
const { main } = require("../cli/main.ts");
main(process.argv).then(
  (code) => {
    process.exitCode = code;
    // Everything is closed by then; do not let a stray timer hold the exit.
    setTimeout(() => process.exit(code), 200).unref();
  },
  (error) => {
    process.stderr.write(`chat: INTERNAL: ${error && error.message ? String(error.message).split("\n")[0] : "error"}\n`);
    process.exit(1);
  },
);
