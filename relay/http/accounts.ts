/**
 * Accounts through the chain: the relay peppers credentials (offline guessing needs its secret), checks what it can before
 * spending gas, submits the relayer's transactions and answers once they are mined. The contract
 * verifies every EIP-712 signature itself; the relay cannot register, rotate or change a credential
 * without the user's key, and its resets are recorded on chain as such.
 *
 * The peppered hash binds the username, and the relay computes it only where it cannot serve as a
 * password oracle: for a name nobody holds yet (registration), or for the caller's own session (a
 * password change). Anyone else could otherwise finish a guess offline from the chain.
 */
import { Router, type Request } from "express";
import { ChatError } from "../../protocol/errors";
import { pepperCredential } from "../../protocol/credential";
import { normalizePublicKey } from "../../protocol/keys";
import {
  CancelResetRequest,
  CredentialHashRequest,
  RegisterRequest,
  ResetRequest,
  RotateRequest,
  UpdateCredentialRequest,
} from "../../protocol/wire";
import { bearerToken } from "../sessions";
import type { TransactionResult } from "../chain/registry";
import { clientAddress, fromStorage, type HttpContext } from "./context";
import { parseWith } from "./errors";
import { admitPasswordAttempt, verifyPassword } from "./password-check";

export function accountRoutes(ctx: HttpContext): Router {
  const router = Router();
  const { chain, settings } = ctx;

  /** Counts one attempt in the shared limits; every route awaits it (an un-awaited hit limits nothing). */
  const limit = (req: Request, bucket: string, username: string, rule: { perUser: number; perAddress: number }) => {
    const hit = ctx.limits.limiter.hit([
      { key: `${bucket}:user:${username}`, limit: rule.perUser },
      { key: `${bucket}:addr:${clientAddress(req)}`, limit: rule.perAddress },
    ]);
    hit.catch(() => undefined); // only keeps a caller that forgot to await from crashing the process
    return hit;
  };

  const pepper = (username: string, credential: string) => pepperCredential({ pepper: settings.credentialPepper, username, credential });

  /** Whether `username` is held on chain; the cache answers "yes" alone, a "no" is confirmed on the chain. */
  const isRegistered = async (username: string) => {
    if (await fromStorage(ctx.cache.getUser(username))) return true;
    return !/^0x0{64}$/.test(await chain.credentialHash(username));
  };

  const notExpired = (deadline: number) => {
    if (deadline * 1000 <= ctx.clock()) throw new ChatError("SIGNATURE_EXPIRED", `deadline ${deadline} has passed`, { field: "deadline" });
  };

  /** Answer once this instance's cache shows the change, so the caller can log in at once. */
  const landed = async (result: TransactionResult) => {
    const synced = await ctx.syncer.waitForBlock(result.blockNumber, settings.writeSyncWaitMs);
    if (!synced) ctx.logger.warn({ blockNumber: result.blockNumber }, "answered a write before the cache caught up with it");
    return { blockNumber: result.blockNumber, transactionHash: result.transactionHash };
  };

  router.post("/v1/credential-hash", async (req, res) => {
    const body = parseWith(CredentialHashRequest, req.body);
    // Counted as a password attempt against the name asked about, whatever the answer.
    await admitPasswordAttempt(ctx, req, body.username);
    const token = bearerToken(req.headers.authorization);
    const ownSession = token !== undefined && (await ctx.sessions.authenticate(token)).sub === body.username;
    if (!ownSession && (await isRegistered(body.username))) {
      // One refusal for every registered name asked without its own session (registration is public on chain).
      throw new ChatError("USERNAME_TAKEN", `${body.username} is registered: its credential hash is given only to its own session`);
    }
    res.json({ credentialHash: pepper(body.username, body.credential) });
  });

  router.post("/v1/register", async (req, res) => {
    const body = parseWith(RegisterRequest, req.body);
    await limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const publicKey = normalizePublicKey(body.publicKey);
    const credentialHash = pepper(body.username, body.credential);
    const result = await chain.register({ username: body.username, credentialHash, publicKey, deadline: body.deadline, signature: body.signature });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "registered");
    res.json(await landed(result));
  });

  router.post("/v1/rotate", async (req, res) => {
    const body = parseWith(RotateRequest, req.body);
    await limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const newPublicKey = normalizePublicKey(body.newPublicKey, "newPublicKey");
    const result = await chain.rotateKey({ ...body, newPublicKey });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "key rotated");
    res.json(await landed(result));
  });

  router.post("/v1/reset", async (req, res) => {
    const body = parseWith(ResetRequest, req.body);
    notExpired(body.deadline);
    const newPublicKey = normalizePublicKey(body.newPublicKey, "newPublicKey");
    // A password check like login's (shared limits and backoff), against the chain itself, not the cache:
    // a reset is the one write the relay vouches for.
    await verifyPassword(ctx, req, {
      username: body.username,
      credential: body.credential,
      credentialHash: () => chain.credentialHash(body.username),
      reason: "reset_wrong_password",
    });
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
    await limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    // The contract checks the current key's signature: the relay can refuse to relay a cancel, never forge one.
    const result = await chain.cancelReset({ username: body.username, deadline: body.deadline, signature: body.signature });
    ctx.logger.warn({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "pending key reset cancelled");
    res.json(await landed(result));
  });

  router.post("/v1/credential", async (req, res) => {
    const body = parseWith(UpdateCredentialRequest, req.body);
    await limit(req, "register", body.username, settings.registerRateLimit);
    notExpired(body.deadline);
    const credentialHash = pepper(body.username, body.credential);
    const result = await chain.updateCredential({ username: body.username, credentialHash, deadline: body.deadline, signature: body.signature });
    ctx.logger.info({ username: body.username, blockNumber: result.blockNumber, tx: result.transactionHash }, "credential updated");
    res.json(await landed(result));
  });

  return router;
}
