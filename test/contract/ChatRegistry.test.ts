/**
 * ChatRegistry on Hardhat's in-process network: every function, every custom error, and the attacks of the
 * trust model (README, "Why the chain, and what each party can do"). All signatures are made through protocol/eip712.ts (see ./signing.ts).
 */
import { expect } from "chai";
import hre from "hardhat";
import { loadFixture, time } from "@nomicfoundation/hardhat-toolbox/network-helpers";
import { ZeroAddress, ZeroHash, concat, id as keccakUtf8, keccak256, toBeHex, toUtf8Bytes, zeroPadValue } from "ethers";
import { registryDomain, type CompactSignature, type RegistryDomain } from "../../protocol/eip712";
import { isValidUsername, usernameHash } from "../../protocol/username";
import { publicKeyToAddress } from "../../protocol/keys";
import type { ChatRegistry } from "../../typechain-types";
import {
  domainOf,
  newIdentity,
  signCancelReset,
  signRegister,
  signReset,
  signRotate,
  signUpdateCredential,
  type Identity,
} from "../helpers/signing";

const KIND = { None: 0n, Registered: 1n, Rotated: 2n, Reset: 3n };
const RELAYER_ROLE = keccakUtf8("RELAYER_ROLE");
const credentialOf = (label: string) => keccak256(toUtf8Bytes(`credential:${label}`));
/** A short delay keeps the tests fast; time.increase moves the chain's clock across it. */
const RESET_DELAY = 3600n;
const MAX_RESET_DELAY = 30n * 24n * 3600n;

async function deployFixture() {
  const [admin, relayer, stranger, otherRelayer] = await hre.ethers.getSigners();
  const registry = (await hre.ethers.deployContract("ChatRegistry", [relayer.address, RESET_DELAY], admin)) as unknown as ChatRegistry;
  await registry.waitForDeployment();
  const domain = await domainOf(registry);
  return { registry, domain, admin, relayer, stranger, otherRelayer };
}

async function futureDeadline(seconds = 3600): Promise<bigint> {
  return BigInt(await time.latest()) + BigInt(seconds);
}

/** Registers `username` with a fresh key through the relayer; returns the key and credential. */
async function registered(
  ctx: Awaited<ReturnType<typeof deployFixture>>,
  username = "alice",
): Promise<{ key: Identity; credential: string }> {
  const key = newIdentity();
  const credential = credentialOf(username);
  const deadline = await futureDeadline();
  const signature = signRegister({ domain: ctx.domain, signer: key, username, credentialHash: credential, deadline });
  await (await ctx.registry.connect(ctx.relayer).register(username, credential, key.publicKey, deadline, signature)).wait();
  return { key, credential };
}

/** Both signatures of an honest rotation from `current` to `next` at `nonce`. */
function rotation(domain: RegistryDomain, username: string, current: Identity, next: Identity, nonce: bigint, deadline: bigint) {
  const message = { domain, username, newPublicKey: next.publicKey, nonce, deadline };
  return { current: signRotate({ ...message, signer: current }), next: signRotate({ ...message, signer: next }) };
}

/** Starts a reset of `username` to `next` through the relayer, signed by `next` at `nonce`; returns effectiveAt. */
async function requested(
  ctx: Awaited<ReturnType<typeof deployFixture>>,
  username: string,
  next: Identity,
  nonce: bigint,
): Promise<bigint> {
  const deadline = await futureDeadline();
  const sig = signReset({ domain: ctx.domain, signer: next, username, newPublicKey: next.publicKey, nonce, deadline });
  await (await ctx.registry.connect(ctx.relayer).requestReset(username, next.publicKey, deadline, sig)).wait();
  return (await ctx.registry.pendingReset(username)).effectiveAt;
}

/** A compact signature that is not a valid ECDSA signature (s above n/2, rejected per EIP-2). */
const HIGH_S_SIGNATURE: CompactSignature = [
  zeroPadValue("0x01", 32),
  "0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
];

describe("ChatRegistry", function () {
  describe("deployment", function () {
    it("keeps the reset delay given, and refuses 0 and more than 30 days (a delay in milliseconds)", async function () {
      const { registry, relayer } = await loadFixture(deployFixture);
      expect(await registry.resetDelay()).to.equal(RESET_DELAY);
      const factory = await hre.ethers.getContractFactory("ChatRegistry");
      for (const delay of [0n, MAX_RESET_DELAY + 1n, 86_400_000n]) {
        await expect(factory.deploy(relayer.address, delay))
          .to.be.revertedWithCustomError(registry, "ChatRegistryInvalidResetDelay")
          .withArgs(delay);
      }
      for (const delay of [1n, MAX_RESET_DELAY]) {
        const deployed = await factory.deploy(relayer.address, delay);
        expect(await deployed.resetDelay()).to.equal(delay);
      }
    });

    it("makes the deployer admin and the constructor's relayer a relayer", async function () {
      const { registry, admin, relayer, stranger } = await loadFixture(deployFixture);
      expect(await registry.hasRole(await registry.DEFAULT_ADMIN_ROLE(), admin.address)).to.equal(true);
      expect(await registry.RELAYER_ROLE()).to.equal(RELAYER_ROLE);
      expect(await registry.isRelayer(relayer.address)).to.equal(true);
      expect(await registry.isRelayer(admin.address)).to.equal(false);
      expect(await registry.isRelayer(stranger.address)).to.equal(false);
    });

    it("publishes its EIP-712 domain (EIP-5267), equal to protocol's registryDomain", async function () {
      const { registry, domain } = await loadFixture(deployFixture);
      const [fields, name, version, chainId, verifyingContract, salt, extensions] = await registry.eip712Domain();
      expect(fields).to.equal("0x0f"); // name, version, chainId, verifyingContract
      expect({ name, version, chainId, verifyingContract }).to.deep.equal(
        registryDomain({ chainId: domain.chainId, verifyingContract: await registry.getAddress() }),
      );
      expect(salt).to.equal(ZeroHash);
      expect(extensions).to.deep.equal([]);
    });

    it("answers ERC-165 for IChatRegistry, IAccessControl and IERC165 only", async function () {
      const { registry } = await loadFixture(deployFixture);
      const iface = registry.interface;
      // The ERC-165 id of IChatRegistry: XOR of its function selectors.
      let chatRegistryId = 0n;
      for (const name of [
        "register", "rotateKey", "requestReset", "cancelReset", "completeReset", "updateCredential", "isRegistered",
        "currentKey", "keyCount", "keyRecord", "credentialHash", "nonces", "isRelayer", "pendingReset", "resetDelay",
      ] as const) {
        chatRegistryId ^= BigInt(iface.getFunction(name)!.selector);
      }
      expect(await registry.supportsInterface(toBeHex(chatRegistryId, 4))).to.equal(true);
      expect(await registry.supportsInterface("0x7965db0b")).to.equal(true); // IAccessControl
      expect(await registry.supportsInterface("0x01ffc9a7")).to.equal(true); // IERC165
      expect(await registry.supportsInterface("0xffffffff")).to.equal(false);
    });

    it("lets the admin grant and revoke more relayers, and nobody else", async function () {
      const ctx = await loadFixture(deployFixture);
      const { registry, admin, stranger, otherRelayer, domain } = ctx;
      await expect(registry.connect(stranger).grantRole(RELAYER_ROLE, stranger.address))
        .to.be.revertedWithCustomError(registry, "AccessControlUnauthorizedAccount")
        .withArgs(stranger.address, ZeroHash);
      await registry.connect(admin).grantRole(RELAYER_ROLE, otherRelayer.address);
      expect(await registry.isRelayer(otherRelayer.address)).to.equal(true);

      const key = newIdentity();
      const deadline = await futureDeadline();
      const credential = credentialOf("bob");
      const sig = signRegister({ domain, signer: key, username: "bob", credentialHash: credential, deadline });
      await expect(registry.connect(otherRelayer).register("bob", credential, key.publicKey, deadline, sig)).to.emit(
        registry,
        "UserRegistered",
      );

      await registry.connect(admin).revokeRole(RELAYER_ROLE, otherRelayer.address);
      expect(await registry.isRelayer(otherRelayer.address)).to.equal(false);
      const key2 = newIdentity();
      const sig2 = signRegister({ domain, signer: key2, username: "carol", credentialHash: credential, deadline });
      await expect(registry.connect(otherRelayer).register("carol", credential, key2.publicKey, deadline, sig2))
        .to.be.revertedWithCustomError(registry, "ChatRegistryUnauthorizedRelayer")
        .withArgs(otherRelayer.address);
    });
  });

  describe("register", function () {
    it("records the user, its first key (kind registered) and credential, and emits the full public key", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      const sig = signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline });
      expect(await registry.nonces("alice")).to.equal(0n);

      const tx = await registry.connect(relayer).register("alice", credential, key.publicKey, deadline, sig);
      await expect(tx)
        .to.emit(registry, "UserRegistered")
        .withArgs(usernameHash("alice"), "alice", credential, key.publicKey);
      const block = await hre.ethers.provider.getBlock((await tx.wait())!.blockNumber);

      expect(await registry.isRegistered("alice")).to.equal(true);
      expect(await registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
      expect(await registry.keyCount("alice")).to.equal(1n);
      expect(await registry.keyRecord("alice", 0)).to.deep.equal([key.address, BigInt(block!.timestamp), KIND.Registered]);
      expect(await registry.credentialHash("alice")).to.equal(credential);
      expect(await registry.nonces("alice")).to.equal(1n);
      expect(publicKeyToAddress(key.publicKey)).to.equal(key.address);
    });

    it("refuses a caller without the relayer role (a stranger, and the admin itself)", async function () {
      const { registry, domain, stranger, admin } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      const sig = signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline });
      for (const caller of [stranger, admin]) {
        await expect(registry.connect(caller).register("alice", credential, key.publicKey, deadline, sig))
          .to.be.revertedWithCustomError(registry, "ChatRegistryUnauthorizedRelayer")
          .withArgs(caller.address);
      }
    });

    describe("usernames, checked on chain exactly as protocol/username.ts does", function () {
      const cases: [string, string][] = [
        ["empty", ""],
        ["2 bytes", "ab"],
        ["exactly 3 bytes", "abc"],
        ["exactly 32 bytes", "a".repeat(32)],
        ["33 bytes", "a".repeat(33)],
        ["every allowed character", "abcdefghijklmnopqrstuvwxyz_0189"],
        ["digits and underscore only", "_0_9_"],
        ["uppercase", "Alice"],
        ["unicode letter (2 UTF-8 bytes)", "alicé"],
        ["unicode look-alike (Cyrillic a)", "\u0430lice"],
        ["3 unicode characters = 9 bytes", "ééé"],
        ["space", "al ice"],
        ["trailing space", "alice "],
        ["hyphen", "al-ice"],
        ["dot", "al.ice"],
        ["NUL byte", "ali\u0000ce"],
        ["characters just outside the ranges ('/', ':', '^', '`', '{')", "a/b:c^d`e{"],
      ];
      for (const [label, username] of cases) {
        const valid = isValidUsername(username);
        it(`${valid ? "accepts" : "refuses"} ${label}`, async function () {
          const { registry, domain, relayer } = await loadFixture(deployFixture);
          const key = newIdentity();
          const credential = credentialOf("x");
          const deadline = await futureDeadline();
          const sig = signRegister({ domain, signer: key, username, credentialHash: credential, deadline });
          const call = registry.connect(relayer).register(username, credential, key.publicKey, deadline, sig);
          if (valid) {
            await expect(call).to.emit(registry, "UserRegistered");
            expect(await registry.isRegistered(username)).to.equal(true);
          } else {
            await expect(call).to.be.revertedWithCustomError(registry, "ChatRegistryInvalidUsername").withArgs(username);
          }
        });
      }

    });

    it("refuses a username already taken, whoever signs", async function () {
      const ctx = await loadFixture(deployFixture);
      await registered(ctx, "alice");
      const key = newIdentity();
      const credential = credentialOf("other");
      const deadline = await futureDeadline();
      const sig = signRegister({ domain: ctx.domain, signer: key, username: "alice", credentialHash: credential, deadline });
      await expect(ctx.registry.connect(ctx.relayer).register("alice", credential, key.publicKey, deadline, sig))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUsernameTaken")
        .withArgs("alice");
    });

    it("refuses an expired deadline and accepts one equal to the block time", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const now = BigInt(await time.latest());
      const expired = now + 10n;
      const sig = signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline: expired });
      await time.setNextBlockTimestamp(expired + 1n);
      await expect(registry.connect(relayer).register("alice", credential, key.publicKey, expired, sig))
        .to.be.revertedWithCustomError(registry, "ChatRegistryExpiredSignature")
        .withArgs(expired);

      const exact = BigInt(await time.latest()) + 5n;
      const sig2 = signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline: exact });
      await time.setNextBlockTimestamp(exact);
      await expect(registry.connect(relayer).register("alice", credential, key.publicKey, exact, sig2)).to.emit(
        registry,
        "UserRegistered",
      );
    });

    it("refuses a public key that is not 64 bytes (empty, 63, 65 with the 0x04 prefix)", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      for (const publicKey of ["0x", `0x${key.publicKey.slice(4)}`, concat(["0x04", key.publicKey])]) {
        const sig = signRegister({ domain, signer: key, username: "alice", credentialHash: credential, publicKey, deadline });
        await expect(registry.connect(relayer).register("alice", credential, publicKey, deadline, sig))
          .to.be.revertedWithCustomError(registry, "ChatRegistryInvalidPublicKey")
          .withArgs((publicKey.length - 2) / 2);
      }
    });

    it("refuses a zero credential hash", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const deadline = await futureDeadline();
      const sig = signRegister({ domain, signer: key, username: "alice", credentialHash: ZeroHash, deadline });
      await expect(
        registry.connect(relayer).register("alice", ZeroHash, key.publicKey, deadline, sig),
      ).to.be.revertedWithCustomError(registry, "ChatRegistryInvalidCredentialHash");
    });

    it("refuses a signature by another key than the one registered", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const wrong = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      // The relayer cannot register a key it does not hold: it signs for the victim's key with its own.
      const sig = signRegister({
        domain, signer: wrong, username: "alice", credentialHash: credential, publicKey: key.publicKey, deadline,
      });
      await expect(registry.connect(relayer).register("alice", credential, key.publicKey, deadline, sig))
        .to.be.revertedWithCustomError(registry, "ChatRegistryInvalidSigner")
        .withArgs(key.address, wrong.address);
    });

    it("refuses a signature whose fields differ from the call (credential, deadline, nonce, username)", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      const variants = [
        signRegister({ domain, signer: key, username: "alice", credentialHash: credentialOf("swapped"), deadline }),
        signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline: deadline + 1n }),
        signRegister({ domain, signer: key, username: "alice", credentialHash: credential, deadline, nonce: 1n }),
        signRegister({ domain, signer: key, username: "alicf", credentialHash: credential, deadline }),
      ];
      for (const sig of variants) {
        await expect(
          registry.connect(relayer).register("alice", credential, key.publicKey, deadline, sig),
        ).to.be.revertedWithCustomError(registry, "ChatRegistryInvalidSigner");
      }
    });

    it("refuses a signature made for another chain id or another contract address", async function () {
      const { registry, domain, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      const otherDomains = [
        registryDomain({ chainId: domain.chainId + 1n, verifyingContract: domain.verifyingContract }),
        registryDomain({ chainId: 1n, verifyingContract: domain.verifyingContract }),
        registryDomain({ chainId: domain.chainId, verifyingContract: newIdentity().address }),
      ];
      for (const other of otherDomains) {
        const sig = signRegister({ domain: other, signer: key, username: "alice", credentialHash: credential, deadline });
        await expect(
          registry.connect(relayer).register("alice", credential, key.publicKey, deadline, sig),
        ).to.be.revertedWithCustomError(registry, "ChatRegistryInvalidSigner");
      }
    });

    it("turns a malformed signature (high s, zero) into ChatRegistryInvalidSigner(expected, 0)", async function () {
      const { registry, relayer } = await loadFixture(deployFixture);
      const key = newIdentity();
      const credential = credentialOf("alice");
      const deadline = await futureDeadline();
      for (const sig of [HIGH_S_SIGNATURE, [ZeroHash, ZeroHash] as CompactSignature]) {
        await expect(registry.connect(relayer).register("alice", credential, key.publicKey, deadline, sig))
          .to.be.revertedWithCustomError(registry, "ChatRegistryInvalidSigner")
          .withArgs(key.address, ZeroAddress);
      }
    });
  });

  describe("rotateKey", function () {
    it("lets anyone submit a rotation signed by the current and the new key; emits the full new key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const sigs = rotation(ctx.domain, "alice", key, next, 1n, deadline);
      const tx = await ctx.registry.connect(ctx.stranger).rotateKey("alice", next.publicKey, deadline, sigs.current, sigs.next);
      await expect(tx).to.emit(ctx.registry, "KeyRotated").withArgs(usernameHash("alice"), 1n, next.publicKey);
      const block = await hre.ethers.provider.getBlock((await tx.wait())!.blockNumber);
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([next.address, 1n]);
      expect(await ctx.registry.keyCount("alice")).to.equal(2n);
      expect(await ctx.registry.keyRecord("alice", 1)).to.deep.equal([next.address, BigInt(block!.timestamp), KIND.Rotated]);
      expect(await ctx.registry.nonces("alice")).to.equal(2n);
      expect(await ctx.registry.credentialHash("alice")).to.equal(credentialOf("alice"));
    });

    it("refuses the relayer rotating without the user's signature", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const relayerKey = newIdentity(); // a key the hostile relay controls
      const deadline = await futureDeadline();
      const message = { domain: ctx.domain, username: "alice", newPublicKey: relayerKey.publicKey, nonce: 1n, deadline };
      const own = signRotate({ ...message, signer: relayerKey });
      // It signs both parts with the key it wants to install...
      await expect(ctx.registry.connect(ctx.relayer).rotateKey("alice", relayerKey.publicKey, deadline, own, own))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(key.address, relayerKey.address);
      // ...or passes a malformed "current key" signature.
      await expect(ctx.registry.connect(ctx.relayer).rotateKey("alice", relayerKey.publicKey, deadline, HIGH_S_SIGNATURE, own))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(key.address, ZeroAddress);
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
    });

    it("refuses a rotation without proof of possession of the new key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const imposter = newIdentity();
      const deadline = await futureDeadline();
      const message = { domain: ctx.domain, username: "alice", newPublicKey: next.publicKey, nonce: 1n, deadline };
      await expect(
        ctx.registry.rotateKey("alice", next.publicKey, deadline, signRotate({ ...message, signer: key }), signRotate({ ...message, signer: imposter })),
      )
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(next.address, imposter.address);
    });

    it("refuses a replayed rotation (the same nonce twice)", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key: a } = await registered(ctx);
      const b = newIdentity();
      const deadline = await futureDeadline();
      const toB = rotation(ctx.domain, "alice", a, b, 1n, deadline);
      await ctx.registry.rotateKey("alice", b.publicKey, deadline, toB.current, toB.next);
      const backToA = rotation(ctx.domain, "alice", b, a, 2n, deadline);
      await ctx.registry.rotateKey("alice", a.publicKey, deadline, backToA.current, backToA.next);
      // a is current again and the old (nonce 1) signatures of a and b are genuine: only the nonce stops them.
      await expect(ctx.registry.rotateKey("alice", b.publicKey, deadline, toB.current, toB.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
      expect(await ctx.registry.nonces("alice")).to.equal(3n);
      expect(await ctx.registry.keyCount("alice")).to.equal(3n);
    });

    it("refuses a signature by a former key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key: a } = await registered(ctx);
      const b = newIdentity();
      const c = newIdentity();
      const deadline = await futureDeadline();
      const toB = rotation(ctx.domain, "alice", a, b, 1n, deadline);
      await ctx.registry.rotateKey("alice", b.publicKey, deadline, toB.current, toB.next);
      const byOldKey = rotation(ctx.domain, "alice", a, c, 2n, deadline);
      await expect(ctx.registry.rotateKey("alice", c.publicKey, deadline, byOldKey.current, byOldKey.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(b.address, a.address);
    });

    it("refuses a ResetKey signature presented as a rotation (the type is part of the digest)", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const message = { domain: ctx.domain, username: "alice", newPublicKey: next.publicKey, nonce: 1n, deadline };
      await expect(
        ctx.registry.rotateKey("alice", next.publicKey, deadline, signReset({ ...message, signer: key }), signReset({ ...message, signer: next })),
      )
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
    });

    it("refuses a signature for another chain id or another contract address", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      for (const other of [
        registryDomain({ chainId: ctx.domain.chainId + 1n, verifyingContract: ctx.domain.verifyingContract }),
        registryDomain({ chainId: ctx.domain.chainId, verifyingContract: newIdentity().address }),
      ]) {
        const sigs = rotation(other, "alice", key, next, 1n, deadline);
        await expect(ctx.registry.rotateKey("alice", next.publicKey, deadline, sigs.current, sigs.next))
          .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
      }
    });

    it("refuses an unknown user, an expired deadline, a bad key and an unchanged key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const sigs = rotation(ctx.domain, "bob", key, next, 1n, deadline);
      await expect(ctx.registry.rotateKey("bob", next.publicKey, deadline, sigs.current, sigs.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnknownUser")
        .withArgs("bob");

      const past = BigInt(await time.latest()) - 1n;
      const expired = rotation(ctx.domain, "alice", key, next, 1n, past);
      await expect(ctx.registry.rotateKey("alice", next.publicKey, past, expired.current, expired.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryExpiredSignature")
        .withArgs(past);

      const shortKey = `0x${next.publicKey.slice(2, 128)}`;
      await expect(ctx.registry.rotateKey("alice", shortKey, deadline, sigs.current, sigs.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidPublicKey")
        .withArgs(63);

      const same = rotation(ctx.domain, "alice", key, key, 1n, deadline);
      await expect(ctx.registry.rotateKey("alice", key.publicKey, deadline, same.current, same.next))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryKeyUnchanged")
        .withArgs(key.address);
    });
  });

  describe("requestReset", function () {
    it("lets the relayer start a reset with proof of the new key; the key stays until the delay passes", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key, credential } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const sig = signReset({ domain: ctx.domain, signer: next, username: "alice", newPublicKey: next.publicKey, nonce: 1n, deadline });
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      const tx = await ctx.registry.connect(ctx.relayer).requestReset("alice", next.publicKey, deadline, sig);
      const block = await hre.ethers.provider.getBlock((await tx.wait())!.blockNumber);
      const effectiveAt = BigInt(block!.timestamp) + RESET_DELAY;
      await expect(tx).to.emit(ctx.registry, "ResetRequested").withArgs(usernameHash("alice"), next.publicKey, effectiveAt);
      await expect(tx).not.to.emit(ctx.registry, "KeyReset");
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([next.address, effectiveAt]);
      // Nothing else changes until completion, but the nonce is consumed (the signature cannot be replayed).
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
      expect(await ctx.registry.keyCount("alice")).to.equal(1n);
      await expect(ctx.registry.keyRecord("alice", 1)).to.be.revertedWithCustomError(ctx.registry, "ChatRegistryKeyIndexOutOfRange");
      expect(await ctx.registry.nonces("alice")).to.equal(2n);
      expect(await ctx.registry.credentialHash("alice")).to.equal(credential);
      expect(await ctx.registry.pendingReset("bob")).to.deep.equal([ZeroAddress, 0n]);
    });

    it("refuses a caller without the relayer role, even the user itself", async function () {
      const ctx = await loadFixture(deployFixture);
      await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const sig = signReset({ domain: ctx.domain, signer: next, username: "alice", newPublicKey: next.publicKey, nonce: 1n, deadline });
      for (const caller of [ctx.stranger, ctx.admin]) {
        await expect(ctx.registry.connect(caller).requestReset("alice", next.publicKey, deadline, sig))
          .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnauthorizedRelayer")
          .withArgs(caller.address);
      }
    });

    it("refuses a reset whose new key did not sign, or signed a rotation instead", async function () {
      const ctx = await loadFixture(deployFixture);
      await registered(ctx);
      const next = newIdentity();
      const other = newIdentity();
      const deadline = await futureDeadline();
      const message = { domain: ctx.domain, username: "alice", newPublicKey: next.publicKey, nonce: 1n, deadline };
      await expect(ctx.registry.connect(ctx.relayer).requestReset("alice", next.publicKey, deadline, signReset({ ...message, signer: other })))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(next.address, other.address);
      await expect(
        ctx.registry.connect(ctx.relayer).requestReset("alice", next.publicKey, deadline, signRotate({ ...message, signer: next })),
      ).to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
    });

    it("refuses a second request while one is pending, even once it is due, with its effective time", async function () {
      const ctx = await loadFixture(deployFixture);
      await registered(ctx);
      const [b, c] = [newIdentity(), newIdentity()];
      const effectiveAt = await requested(ctx, "alice", b, 1n);
      const deadline = await futureDeadline(2 * Number(RESET_DELAY));
      const toC = signReset({ domain: ctx.domain, signer: c, username: "alice", newPublicKey: c.publicKey, nonce: 2n, deadline });
      await expect(ctx.registry.connect(ctx.relayer).requestReset("alice", c.publicKey, deadline, toC))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryResetPending")
        .withArgs("alice", effectiveAt);
      await time.increaseTo(effectiveAt);
      await expect(ctx.registry.connect(ctx.relayer).requestReset("alice", c.publicKey, deadline, toC))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryResetPending")
        .withArgs("alice", effectiveAt);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([b.address, effectiveAt]);
    });

    it("refuses a replayed request (the same nonce twice, after a cancel)", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key: a } = await registered(ctx);
      const b = newIdentity();
      const deadline = await futureDeadline();
      const toB = signReset({ domain: ctx.domain, signer: b, username: "alice", newPublicKey: b.publicKey, nonce: 1n, deadline });
      await ctx.registry.connect(ctx.relayer).requestReset("alice", b.publicKey, deadline, toB);
      await ctx.registry.cancelReset("alice", deadline, signCancelReset({ domain: ctx.domain, signer: a, username: "alice", nonce: 2n, deadline }));
      await expect(ctx.registry.connect(ctx.relayer).requestReset("alice", b.publicKey, deadline, toB))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
    });

    it("refuses an unknown user, an expired deadline, a bad key and an unchanged key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const deadline = await futureDeadline();
      const relayed = ctx.registry.connect(ctx.relayer);
      const sign = (username: string, signer: Identity, d: bigint) =>
        signReset({ domain: ctx.domain, signer, username, newPublicKey: signer.publicKey, nonce: 1n, deadline: d });
      await expect(relayed.requestReset("bob", next.publicKey, deadline, sign("bob", next, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnknownUser")
        .withArgs("bob");
      const past = BigInt(await time.latest()) - 1n;
      await expect(relayed.requestReset("alice", next.publicKey, past, sign("alice", next, past)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryExpiredSignature")
        .withArgs(past);
      await expect(relayed.requestReset("alice", concat(["0x04", next.publicKey]), deadline, sign("alice", next, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidPublicKey")
        .withArgs(65);
      await expect(relayed.requestReset("alice", key.publicKey, deadline, sign("alice", key, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryKeyUnchanged")
        .withArgs(key.address);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      expect(await ctx.registry.nonces("alice")).to.equal(1n);
    });
  });

  describe("completeReset", function () {
    it("lets anyone complete a due reset: records kind reset, emits the full key, clears the pending entry", async function () {
      const ctx = await loadFixture(deployFixture);
      const { credential } = await registered(ctx);
      const next = newIdentity();
      const effectiveAt = await requested(ctx, "alice", next, 1n);
      // Exactly at effectiveAt (the first second it is due).
      await time.setNextBlockTimestamp(effectiveAt);
      const tx = await ctx.registry.connect(ctx.stranger).completeReset("alice", next.publicKey);
      await expect(tx).to.emit(ctx.registry, "KeyReset").withArgs(usernameHash("alice"), 1n, next.publicKey);
      await expect(tx).not.to.emit(ctx.registry, "KeyRotated");
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([next.address, 1n]);
      expect(await ctx.registry.keyRecord("alice", 1)).to.deep.equal([next.address, effectiveAt, KIND.Reset]);
      expect(await ctx.registry.nonces("alice")).to.equal(3n);
      expect(await ctx.registry.credentialHash("alice")).to.equal(credential);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      await expect(ctx.registry.completeReset("alice", next.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryNoPendingReset")
        .withArgs("alice");
    });

    it("refuses before effectiveAt, one second short", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const effectiveAt = await requested(ctx, "alice", next, 1n);
      await expect(ctx.registry.completeReset("alice", next.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryResetNotDue")
        .withArgs("alice", effectiveAt);
      await time.setNextBlockTimestamp(effectiveAt - 1n);
      await expect(ctx.registry.completeReset("alice", next.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryResetNotDue")
        .withArgs("alice", effectiveAt);
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
    });

    it("refuses a public key other than the pending one, and a key that is not 64 bytes", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const effectiveAt = await requested(ctx, "alice", next, 1n);
      await time.increaseTo(effectiveAt);
      for (const wrong of [newIdentity(), key]) {
        await expect(ctx.registry.completeReset("alice", wrong.publicKey))
          .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryPendingKeyMismatch")
          .withArgs(next.address, wrong.address);
      }
      await expect(ctx.registry.completeReset("alice", `0x${next.publicKey.slice(2, 128)}`))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidPublicKey")
        .withArgs(63);
      await ctx.registry.completeReset("alice", next.publicKey);
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([next.address, 1n]);
    });

    it("refuses an unknown user and a user with nothing pending", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      await expect(ctx.registry.completeReset("bob", key.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnknownUser")
        .withArgs("bob");
      await expect(ctx.registry.completeReset("alice", key.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryNoPendingReset")
        .withArgs("alice");
    });
  });

  describe("cancelReset", function () {
    it("lets anyone submit a cancel signed by the current key; the reset can then never complete", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      await requested(ctx, "alice", next, 1n);
      const deadline = await futureDeadline();
      const sig = signCancelReset({ domain: ctx.domain, signer: key, username: "alice", nonce: 2n, deadline });
      await expect(ctx.registry.connect(ctx.stranger).cancelReset("alice", deadline, sig))
        .to.emit(ctx.registry, "ResetCancelled")
        .withArgs(usernameHash("alice"), next.address);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      expect(await ctx.registry.nonces("alice")).to.equal(3n);
      await time.increase(RESET_DELAY * 2n);
      await expect(ctx.registry.completeReset("alice", next.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryNoPendingReset")
        .withArgs("alice");
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
      // A new request may follow the cancel.
      const again = newIdentity();
      expect((await requested(ctx, "alice", again, 3n)) > 0n).to.equal(true);
      expect((await ctx.registry.pendingReset("alice")).key).to.equal(again.address);
    });

    it("still cancels after effectiveAt, until someone completes", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      const effectiveAt = await requested(ctx, "alice", next, 1n);
      await time.increaseTo(effectiveAt + 10n);
      const deadline = await futureDeadline();
      await expect(
        ctx.registry.cancelReset("alice", deadline, signCancelReset({ domain: ctx.domain, signer: key, username: "alice", nonce: 2n, deadline })),
      ).to.emit(ctx.registry, "ResetCancelled");
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
    });

    it("refuses the pending key, a stale nonce, another domain, a malformed signature and a replay", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      await requested(ctx, "alice", next, 1n);
      const deadline = await futureDeadline();
      const sign = (signer: Identity, nonce: bigint) =>
        signCancelReset({ domain: ctx.domain, signer, username: "alice", nonce, deadline });
      // The key being installed cannot cancel (nor can anyone but the current key).
      await expect(ctx.registry.cancelReset("alice", deadline, sign(next, 2n)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(key.address, next.address);
      // The nonce before the request: a cancel signed earlier does not cancel a later reset.
      await expect(ctx.registry.cancelReset("alice", deadline, sign(key, 1n)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
      // Another chain or contract.
      const elsewhere = registryDomain({ chainId: ctx.domain.chainId + 1n, verifyingContract: ctx.domain.verifyingContract });
      await expect(
        ctx.registry.cancelReset("alice", deadline, signCancelReset({ domain: elsewhere, signer: key, username: "alice", nonce: 2n, deadline })),
      ).to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
      await expect(ctx.registry.cancelReset("alice", deadline, HIGH_S_SIGNATURE))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(key.address, ZeroAddress);

      const good = sign(key, 2n);
      await ctx.registry.cancelReset("alice", deadline, good);
      await requested(ctx, "alice", newIdentity(), 3n);
      await expect(ctx.registry.cancelReset("alice", deadline, good))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");
    });

    it("refuses an unknown user, an expired deadline and a user with nothing pending", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const deadline = await futureDeadline();
      const sign = (username: string, nonce: bigint, d: bigint) =>
        signCancelReset({ domain: ctx.domain, signer: key, username, nonce, deadline: d });
      await expect(ctx.registry.cancelReset("bob", deadline, sign("bob", 0n, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnknownUser")
        .withArgs("bob");
      await expect(ctx.registry.cancelReset("alice", deadline, sign("alice", 1n, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryNoPendingReset")
        .withArgs("alice");
      await requested(ctx, "alice", newIdentity(), 1n);
      const past = BigInt(await time.latest()) - 1n;
      await expect(ctx.registry.cancelReset("alice", past, sign("alice", 2n, past)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryExpiredSignature")
        .withArgs(past);
    });
  });

  describe("a rotation while a reset is pending", function () {
    it("drops the pending reset (ResetCancelled, then KeyRotated); the reset can never complete", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const [pending, rotated] = [newIdentity(), newIdentity()];
      const effectiveAt = await requested(ctx, "alice", pending, 1n);
      const deadline = await futureDeadline();
      const sigs = rotation(ctx.domain, "alice", key, rotated, 2n, deadline);
      const tx = await ctx.registry.connect(ctx.stranger).rotateKey("alice", rotated.publicKey, deadline, sigs.current, sigs.next);
      await expect(tx).to.emit(ctx.registry, "ResetCancelled").withArgs(usernameHash("alice"), pending.address);
      await expect(tx).to.emit(ctx.registry, "KeyRotated").withArgs(usernameHash("alice"), 1n, rotated.publicKey);
      const names = (await tx.wait())!.logs.map((log) => ctx.registry.interface.parseLog(log)!.name);
      expect(names).to.deep.equal(["ResetCancelled", "KeyRotated"]);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      const record = await ctx.registry.keyRecord("alice", 1);
      expect([record.key, record.kind]).to.deep.equal([rotated.address, KIND.Rotated]);
      await time.increaseTo(effectiveAt);
      await expect(ctx.registry.completeReset("alice", pending.publicKey))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryNoPendingReset");
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([rotated.address, 1n]);
    });

    it("may rotate to the very key the reset would install; the pending reset is still dropped", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const next = newIdentity();
      await requested(ctx, "alice", next, 1n);
      const deadline = await futureDeadline();
      const sigs = rotation(ctx.domain, "alice", key, next, 2n, deadline);
      await expect(ctx.registry.rotateKey("alice", next.publicKey, deadline, sigs.current, sigs.next))
        .to.emit(ctx.registry, "ResetCancelled")
        .withArgs(usernameHash("alice"), next.address);
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([ZeroAddress, 0n]);
      expect(await ctx.registry.keyCount("alice")).to.equal(2n);
    });

    it("does not emit ResetCancelled when nothing is pending, and a credential change leaves a pending reset", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const b = newIdentity();
      const deadline = await futureDeadline();
      const sigs = rotation(ctx.domain, "alice", key, b, 1n, deadline);
      await expect(ctx.registry.rotateKey("alice", b.publicKey, deadline, sigs.current, sigs.next)).not.to.emit(
        ctx.registry,
        "ResetCancelled",
      );
      const next = newIdentity();
      const effectiveAt = await requested(ctx, "alice", next, 2n);
      const fresh = credentialOf("new password");
      const sig = signUpdateCredential({ domain: ctx.domain, signer: b, username: "alice", credentialHash: fresh, nonce: 3n, deadline });
      await expect(ctx.registry.updateCredential("alice", fresh, deadline, sig)).not.to.emit(ctx.registry, "ResetCancelled");
      expect(await ctx.registry.pendingReset("alice")).to.deep.equal([next.address, effectiveAt]);
    });
  });

  describe("updateCredential", function () {
    it("lets anyone submit a credential change signed by the current key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const fresh = credentialOf("new password");
      const deadline = await futureDeadline();
      const sig = signUpdateCredential({ domain: ctx.domain, signer: key, username: "alice", credentialHash: fresh, nonce: 1n, deadline });
      await expect(ctx.registry.connect(ctx.stranger).updateCredential("alice", fresh, deadline, sig))
        .to.emit(ctx.registry, "CredentialUpdated")
        .withArgs(usernameHash("alice"), fresh);
      expect(await ctx.registry.credentialHash("alice")).to.equal(fresh);
      expect(await ctx.registry.nonces("alice")).to.equal(2n);
      expect(await ctx.registry.currentKey("alice")).to.deep.equal([key.address, 0n]);
      expect(await ctx.registry.keyCount("alice")).to.equal(1n);
    });

    it("refuses a replay (the same nonce twice), a wrong key and a former key", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key: a } = await registered(ctx);
      const deadline = await futureDeadline();
      const fresh = credentialOf("p2");
      const sig = signUpdateCredential({ domain: ctx.domain, signer: a, username: "alice", credentialHash: fresh, nonce: 1n, deadline });
      await ctx.registry.updateCredential("alice", fresh, deadline, sig);
      await expect(ctx.registry.updateCredential("alice", fresh, deadline, sig))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner");

      const wrong = newIdentity();
      const byWrong = signUpdateCredential({ domain: ctx.domain, signer: wrong, username: "alice", credentialHash: fresh, nonce: 2n, deadline });
      await expect(ctx.registry.updateCredential("alice", fresh, deadline, byWrong))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(a.address, wrong.address);

      const b = newIdentity();
      const toB = rotation(ctx.domain, "alice", a, b, 2n, deadline);
      await ctx.registry.rotateKey("alice", b.publicKey, deadline, toB.current, toB.next);
      const byFormer = signUpdateCredential({ domain: ctx.domain, signer: a, username: "alice", credentialHash: fresh, nonce: 3n, deadline });
      await expect(ctx.registry.updateCredential("alice", fresh, deadline, byFormer))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidSigner")
        .withArgs(b.address, a.address);
    });

    it("refuses an unknown user, an expired deadline and a zero hash", async function () {
      const ctx = await loadFixture(deployFixture);
      const { key } = await registered(ctx);
      const fresh = credentialOf("p2");
      const deadline = await futureDeadline();
      const sign = (username: string, credentialHash: string, d: bigint) =>
        signUpdateCredential({ domain: ctx.domain, signer: key, username, credentialHash, nonce: 1n, deadline: d });
      await expect(ctx.registry.updateCredential("bob", fresh, deadline, sign("bob", fresh, deadline)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryUnknownUser")
        .withArgs("bob");
      const past = BigInt(await time.latest()) - 1n;
      await expect(ctx.registry.updateCredential("alice", fresh, past, sign("alice", fresh, past)))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryExpiredSignature")
        .withArgs(past);
      await expect(
        ctx.registry.updateCredential("alice", ZeroHash, deadline, sign("alice", ZeroHash, deadline)),
      ).to.be.revertedWithCustomError(ctx.registry, "ChatRegistryInvalidCredentialHash");
    });
  });

  describe("reads", function () {
    it("answers for unknown users without reverting where a zero is unambiguous", async function () {
      const { registry } = await loadFixture(deployFixture);
      expect(await registry.isRegistered("nobody")).to.equal(false);
      expect(await registry.isRegistered("Not A Valid Name")).to.equal(false);
      expect(await registry.keyCount("nobody")).to.equal(0n);
      expect(await registry.credentialHash("nobody")).to.equal(ZeroHash);
      expect(await registry.nonces("nobody")).to.equal(0n);
      await expect(registry.currentKey("nobody"))
        .to.be.revertedWithCustomError(registry, "ChatRegistryUnknownUser")
        .withArgs("nobody");
      await expect(registry.keyRecord("nobody", 0))
        .to.be.revertedWithCustomError(registry, "ChatRegistryKeyIndexOutOfRange")
        .withArgs("nobody", 0n, 0n);
    });

    it("refuses a key index past the end of the history", async function () {
      const ctx = await loadFixture(deployFixture);
      await registered(ctx);
      await expect(ctx.registry.keyRecord("alice", 1))
        .to.be.revertedWithCustomError(ctx.registry, "ChatRegistryKeyIndexOutOfRange")
        .withArgs("alice", 1n, 1n);
    });
  });

  it("keeps the history in order with its kinds after register, rotate, rotate, cancelled reset, reset; logs rebuild it", async function () {
    const ctx = await loadFixture(deployFixture);
    const { registry, domain } = ctx;
    const { key: k0 } = await registered(ctx, "alice");
    await registered(ctx, "bob"); // another user's history must stay apart
    const [k1, k2, k3] = [newIdentity(), newIdentity(), newIdentity()];
    const deadline = await futureDeadline();
    const r1 = rotation(domain, "alice", k0, k1, 1n, deadline);
    await registry.rotateKey("alice", k1.publicKey, deadline, r1.current, r1.next);
    const r2 = rotation(domain, "alice", k1, k2, 2n, deadline);
    await registry.rotateKey("alice", k2.publicKey, deadline, r2.current, r2.next);
    // A cancelled reset in between leaves no record; the completed one does.
    await requested(ctx, "alice", newIdentity(), 3n);
    await registry.cancelReset("alice", deadline, signCancelReset({ domain, signer: k2, username: "alice", nonce: 4n, deadline }));
    const effectiveAt = await requested(ctx, "alice", k3, 5n);
    await time.increaseTo(effectiveAt);
    await registry.completeReset("alice", k3.publicKey);

    const expected = [
      [k0, KIND.Registered],
      [k1, KIND.Rotated],
      [k2, KIND.Rotated],
      [k3, KIND.Reset],
    ] as const;
    expect(await registry.keyCount("alice")).to.equal(4n);
    expect(await registry.currentKey("alice")).to.deep.equal([k3.address, 3n]);
    expect(await registry.nonces("alice")).to.equal(7n);
    let previousTimestamp = 0n;
    for (const [index, [key, kind]] of expected.entries()) {
      const record = await registry.keyRecord("alice", index);
      expect(record.key).to.equal(key.address);
      expect(record.kind).to.equal(kind);
      expect(record.timestamp >= previousTimestamp).to.equal(true);
      previousTimestamp = record.timestamp;
    }
    expect(await registry.keyCount("bob")).to.equal(1n);

    // The relay's cache is rebuilt from logs alone: the events carry every full public key, in order.
    const id = usernameHash("alice");
    const logs = await registry.queryFilter("*" as never, 0);
    const history = logs
      .map((log) => registry.interface.parseLog(log))
      .filter((parsed) => parsed && parsed.args[0] === id && ["UserRegistered", "KeyRotated", "KeyReset"].includes(parsed.name))
      .map((parsed) => [parsed!.name, parsed!.args[parsed!.name === "UserRegistered" ? 3 : 2] as string]);
    expect(history).to.deep.equal([
      ["UserRegistered", k0.publicKey],
      ["KeyRotated", k1.publicKey],
      ["KeyRotated", k2.publicKey],
      ["KeyReset", k3.publicKey],
    ]);
    expect(history.map(([, publicKey]) => publicKeyToAddress(publicKey))).to.deep.equal(expected.map(([k]) => k.address));
  });
});
