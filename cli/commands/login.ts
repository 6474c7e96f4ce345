import { assertUsername } from "../../protocol/username";
import { loginWithKeys, unlockCurrentKeys } from "../auth";
import type { Context } from "../context";

/** chat login USER */
export async function login(ctx: Context, rawUsername: string): Promise<void> {
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
