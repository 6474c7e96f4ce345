/**
 * Accounts through the chain: the relay peppers credentials (DESIGN.md §2), checks what it can before
 * spending gas, submits the relayer's transactions and answers once they are mined. The contract
 * verifies every EIP-712 signature itself; the relay cannot register, rotate or change a credential
 * without the user's key, and its resets are recorded on chain as such.
 */
import { Router, type Request } from "express";
import { ChatError } from "../../protocol/errors";
import { credentialHashesEqual, pepperCredential } from "../../protocol/credential";
import { normalizePublicKey } from "../../protocol/keys";
import {
  CancelResetRequest,
  CredentialHashRequest,
  RegisterRequest,
  ResetRequest,
  RotateRequest,
  UpdateCredentialRequest,
} from "../../protocol/wire";
import type { TransactionResult } from "../chain/registry";
import { clientAddress, type HttpContext } from "./context";
import { parseWith } from "./errors";

export function accountRoutes(ctx: HttpContext): Router {
  const router = Router();
  const { chain, limiter, settings } = ctx;

  const limit = (req: Request, bucket: string, username: string, rule: { perUser: number; perAddress: number }) =>
    limiter.hit([
      { key: `${bucket}:user:${username}`, limit: rule.perUser },
      { key: `${bucket}:addr:${clientAddress(req)}`, limit: rule.perAddress },
    ]);

  const notExpired = (deadline: number) => {
    if (deadline * 1000 <= ctx.clock()) throw new ChatError("SIGNATURE_EXPIRED", `deadline ${deadline} has passed`, { field: "deadline" });
  };

  /** Answer once this instance's cache shows the change, so the caller can log in at once. */
  const landed = async (result: TransactionResult) => {
    const synced = await ctx.syncer.waitForBlock(result.blockNumber, settings.writeSyncWaitMs);
    if (!synced) ctx.logger.warn({ blockNumber: result.blockNumber }, "answered a write before the cache caught up with it");
    return { blockNumber: result.blockNumber, transactionHash: result.transactionHash };
  };

  router.post("/v1/credential-hash", (req, res) => {
    const body = parseWith(CredentialHashRequest, req.body);
    // An oracle for the peppered hash: limited like login, or it would allow offline guessing.
    limit(req, "credential", body.username, settings.loginRateLimit);
    res.json({ credentialHash: pepperCredential({ pepper: settings.credentialPepper, credential: body.credential }) });
  });

  router.post("/v1/register", async (req, res) => {
    const body = parseWith(RegisterRequest, req.body);
    limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const publicKey = normalizePublicKey(body.publicKey);
    const credentialHash = pepperCredential({ pepper: settings.credentialPepper, credential: body.credential });
    const result = await chain.register({ username: body.username, credentialHash, publicKey, deadline: body.deadline, signature: body.signature });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "registered");
    res.json(await landed(result));
  });

  router.post("/v1/rotate", async (req, res) => {
    const body = parseWith(RotateRequest, req.body);
    limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const newPublicKey = normalizePublicKey(body.newPublicKey, "newPublicKey");
    const result = await chain.rotateKey({ ...body, newPublicKey });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "key rotated");
    res.json(await landed(result));
  });

  router.post("/v1/reset", async (req, res) => {
    const body = parseWith(ResetRequest, req.body);
    // A password check: limited like login, in the same bucket.
    limit(req, "login", body.username, settings.loginRateLimit);
    notExpired(body.deadline);
    const newPublicKey = normalizePublicKey(body.newPublicKey, "newPublicKey");
    // Checked against the chain itself, not the cache: a reset is the one write the relay vouches for.
    const onChain = await chain.credentialHash(body.username);
    if (/^0x0{64}$/.test(onChain)) throw new ChatError("UNKNOWN_USER", `no user named ${body.username}`);
    const given = pepperCredential({ pepper: settings.credentialPepper, credential: body.credential });
    if (!credentialHashesEqual(given, onChain)) {
      ctx.failedLogins.inc({ reason: "reset_wrong_password" });
      throw new ChatError("WRONG_PASSWORD", "wrong password");
    }
    // Only a request: the key becomes current after the contract's delay, unless the current key cancels it.
    const result = await chain.requestReset({ username: body.username, newPublicKey, deadline: body.deadline, newKeySignature: body.newKeySignature });
    ctx.logger.warn(
      { username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash, effectiveAt: result.effectiveAt },
      "key reset requested (lost device)",
    );
    res.json({ ...(await landed(result)), effectiveAt: result.effectiveAt });
  });

  router.post("/v1/reset/cancel", async (req, res) => {
    const body = parseWith(CancelResetRequest, req.body);
    limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    // The contract checks the current key's signature: the relay can refuse to relay a cancel, never forge one.
    const result = await chain.cancelReset({ username: body.username, deadline: body.deadline, signature: body.signature });
    ctx.logger.warn({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "pending key reset cancelled");
    res.json(await landed(result));
  });

  router.post("/v1/credential", async (req, res) => {
    const body = parseWith(UpdateCredentialRequest, req.body);
    limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const credentialHash = pepperCredential({ pepper: settings.credentialPepper, credential: body.credential });
    const result = await chain.updateCredential({ username: body.username, credentialHash, deadline: body.deadline, signature: body.signature });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "credential updated");
    res.json(await landed(result));
  });

  return router;
}
