/**
 * Messages v2 while the chain is unreachable, against a real relay process and chain: a commit whose
 * credential cannot be checked is not skipped (the catch-up stops and is retried), and messages in an
 * existing group still go both ways, since application messages need no chain read.
 */
import { expect } from "../helpers/chai";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import { DsClient } from "../../cli/mls/ds-client";
import { MlsDevice } from "../../client-core/mls-device";
import { ChatError } from "../../protocol/errors";
import type { KeyBook } from "../../protocol/mls";
import { loginDeviceOwner } from "../helpers/mls-device";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain } from "../reliability/stack";
import { homeDeviceStorage } from "../../cli/mls/device-files";

describe("messages v2 while the chain is down (real relay and chain)", function () {
  this.timeout(240_000);
  let chain: Chain;
  let relay: RelayProcess;
  let reader: ChainReader;
  let tmp: string;

  before(async () => {
    chain = await startChain();
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-mls-chain-down-"));
    relay = await startRelayProcess(relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), env: { INSECURE_HTTP: "1" } }));
    reader = await ChainReader.connect(chain.anvil.url);
  });
  after(async () => {
    await relay?.stop();
    reader?.close();
    await chain?.anvil.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("a commit met while the chain is down is applied later, not skipped; messages flow meanwhile", async () => {
    const users = [newTestUser("cd_alice"), newTestUser("cd_bob")];
    await registerUsers(relay, chain.domain, users);
    const owners = await Promise.all(users.map((user) => loginDeviceOwner({ relayUrl: relay.url, domain: chain.domain, user, home: path.join(tmp, user.username) })));
    // bob's view of the chain can be cut, as an unreachable RPC endpoint would be
    let chainDown = false;
    const real = chainKeyBook(reader.registry(chain.deployed.address));
    const unreachable = () => new ChatError("CHAIN_UNAVAILABLE", "chain unreachable (test)");
    const cuttable: KeyBook = {
      keyCount: async (u) => (chainDown ? Promise.reject(unreachable()) : real.keyCount(u)),
      keyRecord: async (u, i) => (chainDown ? Promise.reject(unreachable()) : real.keyRecord(u, i)),
    };
    const open = (i: number, keyBook: KeyBook) =>
      MlsDevice.open({
        storage: homeDeviceStorage(new Home(owners[i].home), owners[i].username),
        username: owners[i].username,
        identityKeys: [{ index: 0, privateKey: owners[i].identity.privateKey }],
        chainId: chain.deployed.chainId,
        contract: chain.deployed.address,
        keyBook,
        connect: (deviceId) => new DsClient({ url: relay.url, token: owners[i].token, deviceId }),
        oneTimeKeyPackages: 2,
      });
    const alice = await open(0, real);
    const bob = await open(1, cuttable);
    await bob.ensureKeyPackages();
    const groupId = await alice.startDirect(bob.username);
    await bob.sync();

    chainDown = true;
    await alice.send(groupId, "before the update");
    expect((await bob.catchUp(groupId)).messages.map((m) => m.body)).to.deep.equal(["before the update"]);
    await bob.send(groupId, "bob without a chain");
    expect((await alice.catchUp(groupId)).messages.map((m) => m.body)).to.deep.equal(["bob without a chain"]);

    // alice's key update carries a new path: checking it needs the chain, so bob stops there and keeps his place.
    await alice.updateKeys(groupId);
    await alice.send(groupId, "after the update");
    const cursorBefore = (await bob.ds.members(groupId)).members.find((m) => m.username === bob.username)!.cursor;
    await expect(bob.catchUp(groupId)).to.be.rejectedWith(ChatError, /chain/);
    expect((await bob.ds.members(groupId)).members.find((m) => m.username === bob.username)!.cursor).to.equal(cursorBefore);
    expect(bob.epoch(groupId)).to.equal(alice.epoch(groupId) - 1);

    chainDown = false;
    const later = await bob.catchUp(groupId);
    expect(later.events.filter((e) => e.kind === "refused")).to.deep.equal([]);
    expect(later.messages.map((m) => m.body)).to.deep.equal(["after the update"]);
    expect(bob.epoch(groupId)).to.equal(alice.epoch(groupId));
  });
});
