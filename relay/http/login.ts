/**
 * Login: a fresh single-use challenge, then username + credential + an EIP-191 personal signature
 * (https://eips.ethereum.org/EIPS/eip-191) by the user's current key over loginMessage(). Proof of the
 * password alone is not enough (a stolen password without the device fails), nor is the key alone.
 * Credential hashes are compared in constant time. Challenges live in the cache storage so that any
 * relay instance can consume one another issued.
 */
import { randomBytes } from "node:crypto";
import { Router, type Request } from "express";
import { getAddress, hexlify, verifyMessage } from "ethers";
import { ChatError } from "../../protocol/errors";
import { credentialHashesEqual, pepperCredential } from "../../protocol/credential";
import { publicKeyToAddress } from "../../protocol/keys";
import { ChallengeRequest, LoginRequest, loginMessage } from "../../protocol/wire";
import { issueSessionToken } from "../sessions";
import { assertCacheFresh, clientAddress, fromStorage, type HttpContext } from "./context";
import { parseWith } from "./errors";

interface Account {
  credentialHash: string;
  address: string;
  keyIndex: number;
}

export function loginRoutes(ctx: HttpContext): Router {
  const router = Router();
  const { limiter, settings } = ctx;

  const limit = (req: Request, bucket: string, username: string) =>
    limiter.hit([
      { key: `${bucket}:user:${username}`, limit: settings.loginRateLimit.perUser },
      { key: `${bucket}:addr:${clientAddress(req)}`, limit: settings.loginRateLimit.perAddress },
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
    limit(req, "challenge", body.username);
    const challenge = hexlify(randomBytes(32)); // 256 bits from the OS CSPRNG: unguessable and never reused
    const expiresAt = ctx.clock() + settings.challengeTtlMs;
    await fromStorage(ctx.cache.putChallenge({ username: body.username, challenge, expiresAt }));
    res.json({ challenge, expiresAt });
  });

  router.post("/v1/login", async (req, res) => {
    const body = parseWith(LoginRequest, req.body);
    limit(req, "login", body.username);
    assertCacheFresh(ctx);
    const fail = (reason: string, error: ChatError): never => {
      ctx.failedLogins.inc({ reason });
      ctx.logger.info({ username: body.username, reason }, "login failed");
      throw error;
    };

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
      if (!account) fail("unknown_user", new ChatError("UNKNOWN_USER", `no user named ${body.username}`));
    }

    const fresh = await fromStorage(ctx.cache.consumeChallenge({ username: body.username, challenge: body.challenge.toLowerCase(), now: ctx.clock() }));
    if (!fresh) fail("challenge", new ChatError("CHALLENGE_INVALID", "challenge unknown, used or expired: request a new one"));

    const given = pepperCredential({ pepper: settings.credentialPepper, credential: body.credential });
    if (!credentialHashesEqual(given, account!.credentialHash)) {
      const latest = await recheck();
      if (latest && credentialHashesEqual(given, latest.credentialHash)) account = latest;
      else fail("wrong_password", new ChatError("WRONG_PASSWORD", "wrong password"));
    }

    const chainId = (await ctx.chain.chainId()).toString();
    const message = loginMessage({ username: body.username, challenge: body.challenge.toLowerCase(), chainId, contractAddress: ctx.chain.contractAddress });
    let signer: string;
    try {
      signer = getAddress(verifyMessage(message, body.signature));
    } catch {
      return fail("bad_signature", new ChatError("INVALID_SIGNATURE", "signature: malformed", { field: "signature" }));
    }
    if (signer !== account!.address) {
      const latest = await recheck();
      if (latest && signer === latest.address && credentialHashesEqual(given, latest.credentialHash)) account = latest;
      else fail("wrong_key", new ChatError("WRONG_KEY", "signed by a key that is not the user's current key"));
    }

    const { token, claims } = issueSessionToken({
      secret: settings.sessionSecret,
      username: body.username,
      keyIndex: account!.keyIndex,
      now: ctx.clock(),
      ttlMs: settings.sessionTtlMs,
    });
    ctx.logger.info({ username: body.username, keyIndex: account!.keyIndex }, "logged in");
    res.json({ token, expiresAt: claims.exp, keyIndex: claims.keyIndex });
  });

  return router;
}
