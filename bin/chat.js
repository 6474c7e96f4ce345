#!/usr/bin/env node
// The `chat` command: runs cli/main.ts through tsx's CommonJS loader (no build step), so that
// `npx chat ...` works from the repository.
"use strict";
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
