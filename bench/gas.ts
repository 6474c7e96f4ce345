/**
 * Gas of each ChatRegistry operation, read from transaction receipts on Hardhat's in-process network.
 * Run: npm run bench:gas. The headline figures use the worst-case username (32 bytes: the most non-zero
 * calldata and event bytes); a typical 5-byte username is printed above them for comparison.
 * A reset is time-locked: requestReset (relayer), then cancelReset (current key) or, once the delay has passed on
 * the chain's clock (moved forward here), completeReset (anyone); reset_gas is request plus complete.
 * Last line: {"register_gas":N,"rotate_gas":N,"request_reset_gas":N,"cancel_reset_gas":N,"complete_reset_gas":N,
 * "reset_gas":N,"rotate_cancelling_reset_gas":N,"update_credential_gas":N}
 */
import hre from "hardhat";
import { time } from "@nomicfoundation/hardhat-toolbox/network-helpers";
import { keccak256, toUtf8Bytes, type ContractTransactionResponse } from "ethers";
import {
  domainOf,
  newIdentity,
  signCancelReset,
  signRegister,
  signReset,
  signRotate,
  signUpdateCredential,
} from "../test/contract/signing";

const RESET_DELAY_SECONDS = 86_400n;

async function gasOf(tx: Promise<ContractTransactionResponse>): Promise<number> {
  const receipt = await (await tx).wait();
  return Number(receipt!.gasUsed);
}

async function measure(username: string) {
  const [admin, relayer, stranger] = await hre.ethers.getSigners();
  const registry = await hre.ethers.deployContract("ChatRegistry", [relayer.address, RESET_DELAY_SECONDS], admin);
  await registry.waitForDeployment();
  const domain = await domainOf(registry);
  // Far enough ahead to survive the clock moves below.
  const deadline = BigInt(await time.latest()) + 30n * RESET_DELAY_SECONDS;
  const credential = keccak256(toUtf8Bytes(`credential of ${username}`));
  const first = newIdentity();
  const second = newIdentity();
  const third = newIdentity();
  const fourth = newIdentity();

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
  const resetTo = (key: typeof third, nonce: bigint) =>
    registry.connect(relayer).requestReset(username, key.publicKey, deadline,
      signReset({ domain, signer: key, username, newPublicKey: key.publicKey, nonce, deadline }));
  const requestReset = await gasOf(resetTo(third, 2n));
  const cancelReset = await gasOf(
    registry.connect(stranger).cancelReset(username, deadline,
      signCancelReset({ domain, signer: second, username, nonce: 3n, deadline })),
  );
  // A rotation by the current key while a reset is pending drops it.
  await gasOf(resetTo(third, 4n));
  const rotateAwayMessage = { domain, username, newPublicKey: fourth.publicKey, nonce: 5n, deadline };
  const rotateCancellingReset = await gasOf(
    registry.connect(stranger).rotateKey(username, fourth.publicKey, deadline,
      signRotate({ ...rotateAwayMessage, signer: second }), signRotate({ ...rotateAwayMessage, signer: fourth })),
  );
  await gasOf(resetTo(third, 6n));
  await time.increase(RESET_DELAY_SECONDS);
  // Anyone may complete a reset that is due: a stranger pays here.
  const completeReset = await gasOf(registry.connect(stranger).completeReset(username, third.publicKey));
  const newCredential = keccak256(toUtf8Bytes(`new credential of ${username}`));
  const updateCredential = await gasOf(
    registry.connect(stranger).updateCredential(username, newCredential, deadline,
      signUpdateCredential({ domain, signer: third, username, credentialHash: newCredential, nonce: 8n, deadline })),
  );
  return { register, rotate, requestReset, cancelReset, completeReset, rotateCancellingReset, updateCredential };
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
      request_reset_gas: worst.requestReset,
      cancel_reset_gas: worst.cancelReset,
      complete_reset_gas: worst.completeReset,
      reset_gas: worst.requestReset + worst.completeReset,
      rotate_cancelling_reset_gas: worst.rotateCancellingReset,
      update_credential_gas: worst.updateCredential,
    }),
  );
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
