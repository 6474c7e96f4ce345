/**
 * Login: a fresh single-use challenge, then username + credential + an EIP-191 personal signature
 * (https://eips.ethereum.org/EIPS/eip-191) by the user's current key over loginMessage(). Proof of the
 * password alone is not enough (a stolen password without the device fails), nor is the key alone.
 * A wrong password and a right password with a wrong key get the same answer (LOGIN_FAILED), after the
 * same work, so a guesser never learns that a password was right; each failure counts in the user's
 * shared limits and backoff (password-check.ts). Challenges live in the cache storage so that any relay
 * instance can consume one another issued. Logout revokes the caller's token on every instance.
 */
import { randomBytes } from "node:crypto";
import { Router, type Request } from "express";
import { getAddress, hexlify, verifyMessage } from "ethers";
import { ChatError } from "../../protocol/errors";
import { publicKeyToAddress } from "../../protocol/keys";
import { ChallengeRequest, LoginRequest, loginMessage } from "../../protocol/wire";
import { issueSessionToken } from "../sessions";
import { assertCacheFresh, clientAddress, fromStorage, requireSession, type HttpContext } from "./context";
import { parseWith } from "./errors";
import { admitPasswordAttempt, passwordMatches, recordPasswordFailure, recordPasswordSuccess } from "./password-check";

interface Account {
  credentialHash: string;
  address: string;
  keyIndex: number;
}

const LOGIN_FAILED_MESSAGE = "login failed: wrong password, or a key that is not the user's current key";

export function loginRoutes(ctx: HttpContext): Router {
  const router = Router();
  const { settings } = ctx;

  const limitChallenge = (req: Request, username: string) =>
    ctx.limits.limiter.hit([
      { key: `challenge:user:${username}`, limit: settings.loginRateLimit.perUser },
      { key: `challenge:addr:${clientAddress(req)}`, limit: settings.loginRateLimit.perAddress },
    ]);

  async function fromCache(username: string): Promise<Account | null> {
    const [user, keys] = await fromStorage(Promise.all([ctx.cache.getUser(username), ctx.cache.getKeys(username)]));
    if (!user || keys.length === 0) return null;
    return { credentialHash: user.credentialHash, address: publicKeyToAddress(user.publicKey), keyIndex: keys[keys.length - 1].index };
  }

  /** The chain's answer, for a user the cache has not seen yet or that changed since the last sync. */
  async function fromChain(username: string): Promise<Account | null> {
    const [credentialHash, current] = await Promise.all([ctx.chain.credentialHash(username), ctx.chain.currentKey(username)]);
    if (!current) return null;
    return { credentialHash, address: current.address, keyIndex: current.index };
  }

  router.post("/v1/login/challenge", async (req, res) => {
    const body = parseWith(ChallengeRequest, req.body);
    await limitChallenge(req, body.username);
    const challenge = hexlify(randomBytes(32)); // 256 bits from the OS CSPRNG: unguessable and never reused
    const expiresAt = ctx.clock() + settings.challengeTtlMs;
    await fromStorage(ctx.cache.putChallenge({ username: body.username, challenge, expiresAt }));
    res.json({ challenge, expiresAt });
  });

  router.post("/v1/login", async (req, res) => {
    const body = parseWith(LoginRequest, req.body);
    await admitPasswordAttempt(ctx, req, body.username);
    assertCacheFresh(ctx);

    let account = await fromCache(body.username);
    let checkedChain = false;
    /** On a cache miss or mismatch, the chain decides (the cache may lag a block behind). */
    const recheck = async (): Promise<Account | null | undefined> => {
      if (checkedChain) return undefined;
      checkedChain = true;
      try {
        return await fromChain(body.username);
      } catch (error) {
        if (account) return undefined; // chain unreachable: the cache's verdict stands
        throw error;
      }
    };
    if (!account) {
      account = (await recheck()) ?? null;
      // Whether a name is registered is public on chain: saying so tells a guesser nothing new.
      if (!account) {
        ctx.failedLogins.inc({ reason: "unknown_user" });
        throw new ChatError("UNKNOWN_USER", `no user named ${body.username}`);
      }
    }

    const fresh = await fromStorage(ctx.cache.consumeChallenge({ username: body.username, challenge: body.challenge.toLowerCase(), now: ctx.clock() }));
    if (!fresh) {
      ctx.failedLogins.inc({ reason: "challenge" });
      throw new ChatError("CHALLENGE_INVALID", "challenge unknown, used or expired: request a new one");
    }

    const chainId = (await ctx.chain.chainId()).toString();
    const message = loginMessage({ username: body.username, challenge: body.challenge.toLowerCase(), chainId, contractAddress: ctx.chain.contractAddress });
    let signer: string | null;
    try {
      signer = getAddress(verifyMessage(message, body.signature));
    } catch {
      signer = null; // a malformed signature is a wrong key: answering otherwise would tell the password was right
    }

    // Both factors are always checked, and the chain re-read on either mismatch, so that a wrong password
    // and a wrong key take the same path and the same time to the same answer.
    const both = (a: Account) => ({ password: passwordMatches(ctx, body.username, body.credential, a.credentialHash), key: signer === a.address });
    let verdict = both(account);
    if (!verdict.password || !verdict.key) {
      const latest = await recheck();
      if (latest) {
        const again = both(latest);
        if (again.password && again.key) [account, verdict] = [latest, again];
      }
    }
    if (!verdict.password || !verdict.key) {
      // The metric's reason is for the operator only; the caller hears one answer.
      await recordPasswordFailure(ctx, body.username, verdict.password ? "wrong_key" : "wrong_password");
      throw new ChatError("LOGIN_FAILED", LOGIN_FAILED_MESSAGE);
    }
    // Only a full success forgets the failures: forgetting them on a right password alone would tell
    // a guesser holding no key that its guess was right (the next guess would not wait).
    await recordPasswordSuccess(ctx, body.username);

    const { token, claims } = issueSessionToken({
      secret: settings.sessionSecret,
      username: body.username,
      keyIndex: account.keyIndex,
      credentialHash: account.credentialHash,
      now: ctx.clock(),
      ttlMs: settings.sessionTtlMs,
    });
    ctx.logger.info({ username: body.username, keyIndex: account.keyIndex }, "logged in");
    res.json({ token, expiresAt: claims.exp, keyIndex: claims.keyIndex });
  });

  /** Ends the caller's session on every relay instance: its token is refused until it would have expired. */
  router.post("/v1/logout", async (req, res) => {
    const claims = await requireSession(ctx, req).catch((error) => {
      // An already ended session is logged out: the answer is the same, so logout is idempotent.
      if (error instanceof ChatError && (error.code === "SESSION_REVOKED" || error.code === "SESSION_EXPIRED")) return null;
      throw error;
    });
    if (claims) {
      await fromStorage(ctx.sessions.revoke(claims));
      ctx.logger.info({ username: claims.sub }, "logged out");
    }
    res.json({ loggedOut: true });
  });

  return router;
}
