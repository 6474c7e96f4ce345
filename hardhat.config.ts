import { subtask } from "hardhat/config";
import { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } from "hardhat/builtin-tasks/task-names";
import type { HardhatUserConfig } from "hardhat/config";
import "@nomicfoundation/hardhat-toolbox";

// The machines this project runs on cannot download compilers, so solc comes from the pinned npm
// package `solc` (solcjs) instead (Hardhat's guide "using a custom solc"). Keep the version in step
// with package.json.
const SOLC_VERSION = "0.8.28";

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args: { solcVersion: string }, _hre, runSuper) => {
  if (args.solcVersion === SOLC_VERSION) {
    const solcPackage = require("solc/package.json") as { version: string };
    const solc = require("solc") as { version(): string };
    return {
      compilerPath: require.resolve("solc/soljson.js"),
      isSolcJs: true,
      version: solcPackage.version,
      longVersion: solc.version(),
    };
  }
  return runSuper();
});

const config: HardhatUserConfig = {
  solidity: {
    version: SOLC_VERSION,
    // viaIR: the IR pipeline inlines ChatRegistry's small checks and keeps the unpacked user slot on the
    // stack, taking rotateKey from ~65,000 to ~63,700 gas (target 65,000; `npm run bench:gas`). Many runs:
    // the contract is called far more often than it is deployed.
    settings: { optimizer: { enabled: true, runs: 10_000 }, viaIR: true, evmVersion: "cancun" },
  },
  networks: {
    localhost: { url: process.env.RPC_URL ?? "http://127.0.0.1:8545" },
    // Any other EVM chain (a testnet, an L2, a private geth/Besu network): the node at RPC_URL, paying with
    // DEPLOYER_PRIVATE_KEY (read from the environment only, never from a committed file).
    remote: {
      url: process.env.RPC_URL ?? "http://127.0.0.1:8545",
      accounts: /^0x[0-9a-fA-F]{64}$/.test(process.env.DEPLOYER_PRIVATE_KEY ?? "") ? [process.env.DEPLOYER_PRIVATE_KEY!] : [],
    },
  },
  mocha: { timeout: 120_000 },
  gasReporter: { enabled: false },
};

export default config;
