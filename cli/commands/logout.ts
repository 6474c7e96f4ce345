import { LogoutResponse } from "../../protocol/wire";
import { describeError } from "../errors";
import type { Context } from "../context";

/**
 * chat logout: revokes the session's token on the relay (every relay instance refuses it from then on),
 * then forgets the token and the unlocked keys (the password-encrypted keystores stay). The local session
 * is forgotten even when the relay cannot be reached, with a warning that the token stands until it expires.
 */
export async function logout(ctx: Pick<Context, "sessions" | "out" | "relay">): Promise<void> {
  const session = ctx.sessions.read();
  let revoked = false;
  if (session) {
    try {
      await ctx.relay.post("/v1/logout", {}, LogoutResponse, { token: session.token });
      revoked = true;
    } catch (error) {
      const { code, message } = describeError(error);
      ctx.out.warn({
        code: "LOGOUT_NOT_REVOKED",
        cause: code,
        message: `could not end the session on the relay (${message}); its token stays valid until ${new Date(session.expiresAt).toISOString()}`,
      });
    }
  }
  const existed = ctx.sessions.delete();
  ctx.out.data(
    { type: "logout", username: session?.username ?? null, wasLoggedIn: existed, revokedOnRelay: revoked },
    existed ? `Logged out ${session?.username}` : "Not logged in",
  );
}
