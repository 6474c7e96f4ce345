/**
 * Gas of each ChatRegistry operation, read from transaction receipts on Hardhat's in-process network.
 * Run: npm run bench:gas. The headline figures use the worst-case username (32 bytes: the most non-zero
 * calldata and event bytes); a typical 5-byte username is printed above them for comparison.
 * Last line: {"register_gas":N,"rotate_gas":N,"reset_gas":N,"update_credential_gas":N}
 */
import hre from "hardhat";
import { keccak256, toUtf8Bytes, type ContractTransactionResponse } from "ethers";
import { domainOf, newIdentity, signRegister, signReset, signRotate, signUpdateCredential } from "../test/contract/signing";

async function gasOf(tx: Promise<ContractTransactionResponse>): Promise<number> {
  const receipt = await (await tx).wait();
  return Number(receipt!.gasUsed);
}

async function measure(username: string) {
  const [admin, relayer, stranger] = await hre.ethers.getSigners();
  const registry = await hre.ethers.deployContract("ChatRegistry", [relayer.address], admin);
  await registry.waitForDeployment();
  const domain = await domainOf(registry);
  const deadline = BigInt(Math.floor(Date.now() / 1000) + 3600);
  const credential = keccak256(toUtf8Bytes(`credential of ${username}`));
  const first = newIdentity();
  const second = newIdentity();
  const third = newIdentity();

  const register = await gasOf(
    registry.connect(relayer).register(username, credential, first.publicKey, deadline,
      signRegister({ domain, signer: first, username, credentialHash: credential, deadline })),
  );
  // Anyone may submit a rotation: a stranger pays here, as a user would when the relay is down.
  const rotateMessage = { domain, username, newPublicKey: second.publicKey, nonce: 1n, deadline };
  const rotate = await gasOf(
    registry.connect(stranger).rotateKey(username, second.publicKey, deadline,
      signRotate({ ...rotateMessage, signer: first }), signRotate({ ...rotateMessage, signer: second })),
  );
  const reset = await gasOf(
    registry.connect(relayer).resetKey(username, third.publicKey, deadline,
      signReset({ domain, signer: third, username, newPublicKey: third.publicKey, nonce: 2n, deadline })),
  );
  const newCredential = keccak256(toUtf8Bytes(`new credential of ${username}`));
  const updateCredential = await gasOf(
    registry.connect(stranger).updateCredential(username, newCredential, deadline,
      signUpdateCredential({ domain, signer: third, username, credentialHash: newCredential, nonce: 3n, deadline })),
  );
  return { register, rotate, reset, updateCredential };
}

async function main() {
  const typical = await measure("alice");
  console.log(`typical username (5 bytes): ${JSON.stringify(typical)}`);
  const worst = await measure("a".repeat(16) + "_0123456789xyz_z");
  console.log(`longest username (32 bytes): ${JSON.stringify(worst)}`);
  console.log(`targets: register <= 120000 (${worst.register <= 120_000 ? "met" : "MISSED"}), rotate <= 65000 (${worst.rotate <= 65_000 ? "met" : "MISSED"})`);
  console.log(
    JSON.stringify({
      register_gas: worst.register,
      rotate_gas: worst.rotate,
      reset_gas: worst.reset,
      update_credential_gas: worst.updateCredential,
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
