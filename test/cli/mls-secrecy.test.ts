/**
 * Forward secrecy and post-compromise security of messages v2, against a real relay process, a real anvil chain
 * with ChatRegistry, and the CLI's own device code (cli/mls). The attacker copies a device's home folder (its
 * sealed MLS state, and the identity key that unwraps it: the strongest thief) and replays what it captured from
 * the relay's log, as a relay or a network observer could.
 */
import { expect } from "chai";
import { cpSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ChainReader } from "../../client-core/chain-reader";
import { Home } from "../../cli/home";
import { chainKeyBook } from "../../client-core/chain-key-book";
import type { MlsDevice } from "../../client-core/mls-device";
import { ChatError } from "../../protocol/errors";
import { deviceAuthenticationService, mlsClientConfig, openGroupState, processIncomingMessage, RETAINED_EPOCHS } from "../../protocol/mls";
import { decodeBase64 } from "../../protocol/wire-v2";
import { loginDeviceOwner, openMlsDevice, type DeviceOwner } from "../helpers/mls-device";
import { startRelayProcess, type RelayProcess } from "../helpers/relay-process";
import { newTestUser, registerUsers, relayOptions, relaySecrets, startChain, type Chain } from "../reliability/stack";
import { homeDeviceStore } from "../../cli/mls/device-files";

describe("messages v2 against real processes: forward secrecy and post-compromise security", function () {
  this.timeout(240_000);
  let chain: Chain;
  let relay: RelayProcess;
  let reader: ChainReader;
  let tmp: string;

  before(async () => {
    chain = await startChain();
    tmp = mkdtempSync(path.join(os.tmpdir(), "chat-mls-secrecy-"));
    relay = await startRelayProcess(relayOptions(chain, { dataDir: path.join(tmp, "relay"), secrets: relaySecrets(), env: { INSECURE_HTTP: "1" } }));
    reader = await ChainReader.connect(chain.anvil.url);
  });
  after(async () => {
    await relay?.stop();
    reader?.close();
    await chain?.anvil.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  async function pair(prefix: string): Promise<{ alice: MlsDevice; bob: MlsDevice; bobOwner: DeviceOwner; groupId: string }> {
    const users = [newTestUser(`${prefix}_a`), newTestUser(`${prefix}_b`)];
    await registerUsers(relay, chain.domain, users);
    const owners = await Promise.all(users.map((user) => loginDeviceOwner({ relayUrl: relay.url, domain: chain.domain, user, home: path.join(tmp, user.username) })));
    const [alice, bob] = await Promise.all(
      owners.map(async (owner) => (await openMlsDevice({ owner, relayUrl: relay.url, chainId: chain.deployed.chainId, contract: chain.deployed.address, reader })).device),
    );
    const groupId = await alice.startDirect(bob.username);
    await bob.sync();
    return { alice, bob, bobOwner: owners[1], groupId };
  }

  /** What the thief gets from a copied home folder: the group's saved state, unsealed with the stolen identity key. */
  function stolenState(owner: DeviceOwner, groupId: string) {
    const copy = path.join(tmp, `stolen-${owner.username}-${Date.now()}`);
    cpSync(owner.home, copy, { recursive: true });
    const store = homeDeviceStore(new Home(copy), owner.username);
    const key = store.stateKey([{ index: 0, privateKey: owner.identity.privateKey }]);
    const clientConfig = mlsClientConfig(
      deviceAuthenticationService({ keyBook: chainKeyBook(reader.registry(chain.deployed.address)), policy: "strict", chainId: chain.deployed.chainId, contract: chain.deployed.address }),
    );
    return openGroupState({ sealed: decodeBase64(store.readGroup(groupId)!.sealed), key, groupId: Buffer.from(groupId, "hex"), clientConfig });
  }

  /** The relay's log of the group as a device of it reads it: every byte the relay (or the wire) carried. */
  async function logOf(device: MlsDevice, groupId: string) {
    return (await device.ds.log(groupId, 0, 1000)).entries;
  }

  async function readable(state: ReturnType<typeof stolenState>, bytes: string): Promise<boolean> {
    try {
      const result = await processIncomingMessage({ state, message: decodeBase64(bytes) });
      return result.kind === "application";
    } catch (error) {
      expect(error).to.be.instanceOf(ChatError);
      return false;
    }
  }

  it("forward secrecy: bob's state stolen after later epochs opens none of the messages captured earlier", async () => {
    const { alice, bob, bobOwner, groupId } = await pair("fs");
    await alice.send(groupId, "early one");
    await alice.send(groupId, "early two");
    expect((await bob.sync()).messages.map((m) => m.body)).to.deep.equal(["early one", "early two"]);
    const captured = (await logOf(alice, groupId)).filter((e) => e.kind === "application");
    expect(captured).to.have.length(2);

    // Key updates move the group on, through the relay, more epochs than a state keeps for late messages.
    for (let i = 0; i < RETAINED_EPOCHS + 1; i++) {
      await (i % 2 ? alice : bob).updateKeys(groupId);
      await (i % 2 ? bob : alice).sync();
    }
    await alice.send(groupId, "current");
    expect((await bob.sync()).messages.map((m) => m.body)).to.deep.equal(["current"]);
    expect(bob.epoch(groupId)).to.equal(alice.epoch(groupId));

    const stolen = stolenState(bobOwner, groupId);
    for (const entry of captured) expect(await readable(stolen, entry.bytes), `captured seq ${entry.seq}`).to.equal(false);
    // The stolen state is a working one: what is sent next, it reads (that is what post-compromise security heals).
    await alice.send(groupId, "next");
    const next = (await logOf(alice, groupId)).filter((e) => e.kind === "application").at(-1)!;
    expect(await readable(stolenState(bobOwner, groupId), next.bytes)).to.equal(true);
  });

  it("post-compromise security: a copy of bob's state reads nothing after bob's next key update", async () => {
    const { alice, bob, bobOwner, groupId } = await pair("pcs");
    await alice.send(groupId, "before");
    await bob.sync();
    const stolen = stolenState(bobOwner, groupId);

    await bob.updateKeys(groupId);
    await alice.sync();
    await alice.send(groupId, "after the update");
    expect((await bob.sync()).messages.map((m) => m.body)).to.deep.equal(["after the update"]);

    // The thief replays the whole log (commit included) into the copy: it cannot follow bob's update.
    let state = stolen;
    for (const entry of (await logOf(alice, groupId)).filter((e) => e.seq > 0)) {
      try {
        const result = await processIncomingMessage({ state, message: decodeBase64(entry.bytes) });
        if (result.kind === "commit") state = result.state;
        if (result.kind === "application") expect(result.payload.body).to.not.equal("after the update");
      } catch (error) {
        expect(error).to.be.instanceOf(ChatError);
      }
    }
    const after = (await logOf(alice, groupId)).filter((e) => e.kind === "application").at(-1)!;
    expect(await readable(state, after.bytes)).to.equal(false);
  });
});
