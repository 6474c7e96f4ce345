import { assertUsername } from "../../protocol/username";
import { loginWithKeys, unlockCurrentKeys, type LoginDeps, type UnlockDeps } from "../auth";
import type { Context } from "../context";

export type LoginCommandDeps = LoginDeps & UnlockDeps & Pick<Context, "passwords" | "credential">;

/** chat login USER */
export async function login(ctx: LoginCommandDeps, rawUsername: string): Promise<void> {
  const username = assertUsername(rawUsername);
  await ctx.deployment();
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const keys = await unlockCurrentKeys(ctx, username, password);
  const credential = await ctx.credential(username, password);
  const session = await loginWithKeys({ ctx, username, credential, keys });
  ctx.out.data(
    { type: "login", username, keyIndex: session.keyIndex, expiresAt: session.expiresAt },
    `Logged in as ${username} until ${new Date(session.expiresAt).toISOString()}`,
  );
}
