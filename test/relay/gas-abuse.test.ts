/**
 * The relayer's gas under abuse, against a real anvil and the real MariaDB: concurrent requests for one name
 * or one nonce, a deadline too close to the chain's time, a transaction stuck at a low fee, and a deadline
 * that passes while its transaction waits in the mempool. What must hold: the relayer's receipts (counted
 * block by block on the chain) show no reverted transaction, and a control pair of users keeps registering
 * and rotating while the attacks run.
 */
import { expect } from "chai";
import { toBeHex, type TransactionResponse } from "ethers";
import { newIdentity, signRegister, signRotate } from "../contract/signing";
import type { TestDatabase } from "../helpers/mysql";
import { bumpFees } from "../../relay/chain/tx-sender";
import { api, registerUser, rotateUser, startRelay, withDatabase, type RelayFixture } from "./accounts-fixture";
import { startChain, type ChainFixture } from "../helpers/chain";
import { newTestUser, uniqueUsername, type TestUser } from "../helpers/users";

/** Registers `user` with a signature valid until `deadline` (unix seconds). */
async function registerWithDeadline(url: string, chain: ChainFixture, user: TestUser, deadline: number) {
  const hash = await api(url, "POST", "/v1/credential-hash", { username: user.username, credential: user.credential });
  if (hash.status !== 200) return hash;
  const signature = signRegister({
    domain: chain.domain,
    signer: user.identity,
    username: user.username,
    credentialHash: hash.body.credentialHash,
    deadline: BigInt(deadline),
  });
  return api(url, "POST", "/v1/register", { username: user.username, credential: user.credential, publicKey: user.identity.publicKey, deadline, signature });
}

/** Every transaction the relayer sent in blocks [from, latest], with its receipt's status. */
async function relayerReceipts(chain: ChainFixture, relayer: string, from: number) {
  const latest = await chain.provider.getBlockNumber();
  const found: { tx: TransactionResponse; status: number }[] = [];
  for (let n = from; n <= latest; n++) {
    const block = await chain.provider.getBlock(n, true);
    for (const tx of block!.prefetchedTransactions) {
      if (tx.from !== relayer) continue;
      const receipt = await chain.provider.getTransactionReceipt(tx.hash);
      found.push({ tx, status: receipt!.status! });
    }
  }
  return found;
}

async function chainTime(chain: ChainFixture): Promise<number> {
  return (await chain.provider.getBlock("latest"))!.timestamp;
}

async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 20_000) {
  const start = Date.now();
  while (!(await condition())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Keeps two users rotating their keys until stopped; every rotation must succeed. */
function controlPair(relay: RelayFixture, chain: ChainFixture, users: TestUser[]) {
  let stopped = false;
  const statuses: number[] = [];
  const loops = users.map(async (user) => {
    while (!stopped) {
      const next = newIdentity();
      const response = await rotateUser(relay.url, chain, user, next);
      statuses.push(response.status);
      if (response.status === 200) user.identity = next;
      else throw new Error(`control rotation failed: ${JSON.stringify(response.body)}`);
    }
  });
  return {
    statuses,
    stop: async () => {
      stopped = true;
      await Promise.all(loops);
    },
  };
}

describe("relayer gas under abuse (anvil + MariaDB)", function () {
  this.timeout(90_000);
  let chain: ChainFixture;
  let db: TestDatabase;
  let relay: RelayFixture;
  let firstBlock: number;
  const control = [newTestUser(uniqueUsername("ctl_a")), newTestUser(uniqueUsername("ctl_b"))];

  before(async () => {
    chain = await startChain();
    db = await withDatabase();
    relay = await startRelay({ chain, db, env: { TX_DEADLINE_MARGIN_SECONDS: "60" } });
    firstBlock = (await chain.provider.getBlockNumber()) + 1;
    for (const user of control) expect((await registerUser(relay.url, chain.domain, user)).status).to.equal(200);
  });
  after(async () => {
    await relay?.close();
    await db?.drop();
    await chain?.close();
  });

  it("five concurrent registrations of one name: one transaction, four refusals before broadcast, none reverted", async () => {
    const before = relay.chain.transactionStats();
    const pair = controlPair(relay, chain, control);
    const name = newTestUser(uniqueUsername("contested")).username;
    const claimants = Array.from({ length: 5 }, () => ({ ...newTestUser(uniqueUsername()), username: name }));
    const answers = await Promise.all(claimants.map((user) => registerWithDeadline(relay.url, chain, user, (Date.now() / 1000 | 0) + 3600)));
    await pair.stop();

    const codes = answers.map((a) => (a.status === 200 ? "ok" : a.body.error.code)).sort();
    expect(codes).to.deep.equal(["USERNAME_TAKEN", "USERNAME_TAKEN", "USERNAME_TAKEN", "USERNAME_TAKEN", "ok"]);
    const winner = claimants[answers.findIndex((a) => a.status === 200)];
    const [key] = await chain.registry.currentKey(name);
    expect(key).to.equal(winner.identity.address);
    const after = relay.chain.transactionStats();
    // one registration plus the control pair's rotations, nothing for the four losers
    expect(after.broadcast - before.broadcast).to.equal(1 + pair.statuses.length);
    expect(pair.statuses.length).to.be.greaterThan(0);
    expect(after.reverted).to.equal(0);
  });

  it("five concurrent rotations signed with one nonce: one transaction, none reverted", async () => {
    const victim = newTestUser(uniqueUsername("nonce"));
    expect((await registerUser(relay.url, chain.domain, victim)).status).to.equal(200);
    const pair = controlPair(relay, chain, control);
    const nonce = await chain.registry.nonces(victim.username);
    const deadline = (Date.now() / 1000 | 0) + 3600;
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => {
        const next = newIdentity();
        const common = { domain: chain.domain, username: victim.username, newPublicKey: next.publicKey, nonce, deadline: BigInt(deadline) };
        return api(relay.url, "POST", "/v1/rotate", {
          username: victim.username,
          newPublicKey: next.publicKey,
          deadline,
          currentKeySignature: signRotate({ ...common, signer: victim.identity }),
          newKeySignature: signRotate({ ...common, signer: next }),
        });
      }),
    );
    await pair.stop();
    expect(answers.filter((a) => a.status === 200)).to.have.length(1);
    for (const refused of answers.filter((a) => a.status !== 200)) {
      // the nonce moved on: the contract's signature check fails in the simulation
      expect(refused.status).to.equal(400);
      expect(refused.body.error.code).to.equal("INVALID_SIGNATURE");
    }
    expect(await chain.registry.keyCount(victim.username)).to.equal(2n);
    expect(relay.chain.transactionStats().reverted).to.equal(0);
  });

  it("refuses a deadline closer than TX_DEADLINE_MARGIN_SECONDS to the chain's time, sending nothing", async () => {
    const before = relay.chain.transactionStats();
    const pendingBefore = await chain.provider.getTransactionCount(relay.chain.relayerAddress, "pending");
    const user = newTestUser(uniqueUsername("hasty"));
    const response = await registerWithDeadline(relay.url, chain, user, (await chainTime(chain)) + 20);
    expect(response.status).to.equal(400);
    expect(response.body.error.code).to.equal("SIGNATURE_EXPIRED");
    expect(response.body.error.message).to.match(/60 s/);
    expect(relay.chain.transactionStats().broadcast).to.equal(before.broadcast);
    expect(await chain.provider.getTransactionCount(relay.chain.relayerAddress, "pending")).to.equal(pendingBefore);
    expect(await chain.registry.isRegistered(user.username)).to.equal(false);
  });

  it("the relayer's balance is in /healthz and /metrics", async () => {
    const balance = await chain.provider.getBalance(relay.chain.relayerAddress);
    const health = await api(relay.url, "GET", "/healthz");
    expect(health.body.relayer.address).to.equal(relay.chain.relayerAddress);
    expect(BigInt(health.body.relayer.balanceWei)).to.be.closeTo(balance, 10n ** 16n);
    expect(health.body.relayer.low).to.equal(false);
    const metrics = await (await fetch(`${relay.url}/metrics`)).text();
    expect(metrics).to.match(/^chat_relay_relayer_balance_wei \d/m);
    expect(metrics).to.match(/^chat_relay_relayer_transactions_total\{outcome="reverted"\} 0$/m);
  });

  it("counting the relayer's receipts on chain: not one reverted", async () => {
    const receipts = await relayerReceipts(chain, relay.chain.relayerAddress, firstBlock);
    expect(receipts.length).to.be.greaterThan(5);
    expect(receipts.filter((r) => r.status !== 1)).to.have.length(0);
  });
});

describe("relayer fee replacement", () => {
  it("raises both fees by the percent, rounded up and by at least 1 wei, or to the node's current fees when higher", () => {
    const previous = { type: 2 as const, maxFeePerGas: 1_000n, maxPriorityFeePerGas: 7n };
    expect(bumpFees(previous, null, 13)).to.deep.equal({ type: 2, maxFeePerGas: 1_130n, maxPriorityFeePerGas: 8n });
    expect(bumpFees({ ...previous, maxPriorityFeePerGas: 0n }, null, 13)).to.deep.equal({ type: 2, maxFeePerGas: 1_130n, maxPriorityFeePerGas: 1n });
    const fresh = { type: 2 as const, maxFeePerGas: 5_000n, maxPriorityFeePerGas: 100n };
    expect(bumpFees(previous, fresh, 25)).to.deep.equal({ type: 2, maxFeePerGas: 5_000n, maxPriorityFeePerGas: 100n });
    expect(bumpFees({ type: 0, gasPrice: 800n }, null, 25)).to.deep.equal({ type: 0, gasPrice: 1_000n });
  });
});

describe("relayer gas: stuck transactions (anvil without automine)", function () {
  this.timeout(90_000);
  let chain: ChainFixture;
  let relay: RelayFixture;
  let firstBlock: number;

  before(async () => {
    chain = await startChain();
    relay = await startRelay({
      chain,
      env: { TX_DEADLINE_MARGIN_SECONDS: "5", TX_REPLACE_AFTER_SECONDS: "1", TX_FEE_BUMP_PERCENT: "13", RELAYER_BALANCE_WARN_WEI: "1" + "0".repeat(30) },
    });
    firstBlock = (await chain.provider.getBlockNumber()) + 1;
  });
  afterEach(async () => {
    await chain.provider.send("evm_setAutomine", [true]);
  });
  after(async () => {
    await relay?.close();
    await chain?.close();
  });

  /** Mines one block that leaves the relayer's pending transaction out: its base fee is above the offered fee. */
  async function mineWithoutIt(pending: TransactionResponse) {
    await chain.provider.send("anvil_setNextBlockBaseFeePerGas", [toBeHex(pending.maxFeePerGas! * 2n)]);
    await chain.provider.send("evm_mine", []);
  }

  async function pendingOfRelayer(): Promise<TransactionResponse[]> {
    const content = await chain.provider.send("txpool_content", []);
    const mine = Object.entries(content.pending as Record<string, Record<string, { hash: string }>>).find(
      ([address]) => address.toLowerCase() === relay.chain.relayerAddress.toLowerCase(),
    );
    const hashes = mine ? Object.values(mine[1]).map((tx) => tx.hash) : [];
    return Promise.all(hashes.map(async (hash) => (await chain.provider.getTransaction(hash))!));
  }

  it("re-sends a transaction stuck at a low fee at the same nonce with both fees raised by at least 12.5 %", async () => {
    await chain.provider.send("evm_setAutomine", [false]);
    const user = newTestUser(uniqueUsername("stuck"));
    const answer = registerWithDeadline(relay.url, chain, user, (await chainTime(chain)) + 3600);
    await until("the registration in the mempool", async () => (await pendingOfRelayer()).length === 1);
    const [original] = await pendingOfRelayer();
    await mineWithoutIt(original);
    expect(await chain.provider.getTransactionReceipt(original.hash)).to.equal(null);

    await until("a replacement", () => relay.chain.transactionStats().replaced >= 1);
    const [replacement] = await pendingOfRelayer();
    expect(replacement.hash).to.not.equal(original.hash);
    expect(replacement.nonce).to.equal(original.nonce);
    expect(replacement.data).to.equal(original.data);
    expect(replacement.maxFeePerGas! * 1000n).to.be.gte(original.maxFeePerGas! * 1125n);
    expect(replacement.maxPriorityFeePerGas! * 1000n).to.be.gte(original.maxPriorityFeePerGas! * 1125n);
    await chain.provider.send("evm_mine", []);

    const response = await answer;
    expect(response.status, JSON.stringify(response.body)).to.equal(200);
    expect(response.body.transactionHash).to.equal(replacement.hash);
    expect(await chain.registry.isRegistered(user.username)).to.equal(true);
  });

  it("a deadline that passes in the mempool: the call is replaced by an empty transfer, nothing reverts", async () => {
    await chain.provider.send("evm_setAutomine", [false]);
    const user = newTestUser(uniqueUsername("late"));
    const deadline = (await chainTime(chain)) + 8; // passes the 5 s margin now
    const answer = registerWithDeadline(relay.url, chain, user, deadline);
    await until("the registration in the mempool", async () => (await pendingOfRelayer()).length === 1);
    const [original] = await pendingOfRelayer();
    // The next block comes after the deadline, and without the priced-out registration.
    await chain.provider.send("evm_setNextBlockTimestamp", [deadline + 1]);
    await mineWithoutIt(original);

    await until("the cancelling transfer", () => relay.chain.transactionStats().cancelled >= 1);
    const [cancel] = await pendingOfRelayer();
    expect(cancel.nonce).to.equal(original.nonce);
    expect(cancel.to).to.equal(relay.chain.relayerAddress);
    expect(cancel.value).to.equal(0n);
    await chain.provider.send("evm_mine", []);

    const response = await answer;
    expect(response.status).to.equal(400);
    expect(response.body.error.code).to.equal("SIGNATURE_EXPIRED");
    expect(await chain.registry.isRegistered(user.username)).to.equal(false);
  });

  it("warns of a low balance in /healthz, and no receipt of the relayer is reverted", async () => {
    const health = await api(relay.url, "GET", "/healthz");
    expect(health.body.relayer.low).to.equal(true);
    const receipts = await relayerReceipts(chain, relay.chain.relayerAddress, firstBlock);
    expect(receipts).to.have.length(2);
    expect(receipts.filter((r) => r.status !== 1)).to.have.length(0);
    expect(relay.chain.transactionStats()).to.include({ broadcast: 2, cancelled: 1, reverted: 0, mined: 2 });
  });
});
