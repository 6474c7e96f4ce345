import { loginWithKeys, unlockCurrentKeys, type LoginDeps, type UnlockDeps } from "../auth";
import type { Context } from "../context";
import { parseUsername } from "../errors";
import { localTime } from "../messaging";
import { checkOwnAccount, type OwnAccountDeps } from "../own-account";
import { publishDevice, type MlsChatDeps } from "../mls/chat";

export type LoginCommandDeps = LoginDeps & UnlockDeps & OwnAccountDeps & MlsChatDeps & Pick<Context, "passwords" | "credential">;

/** chat login USER */
export async function login(ctx: LoginCommandDeps, rawUsername: string): Promise<void> {
  const username = parseUsername(rawUsername);
  await ctx.deployment();
  // Before the password: a pending reset of this account is news the owner needs first.
  await checkOwnAccount(ctx, username);
  const password = await ctx.passwords.password(`Password for ${username}: `);
  const keys = await unlockCurrentKeys(ctx, username, password);
  const credential = await ctx.credential(username, password);
  const session = await loginWithKeys({ ctx, username, credential, keys });
  await publishDevice(ctx, session);
  ctx.out.data(
    { type: "login", username, keyIndex: session.keyIndex, expiresAt: session.expiresAt },
    `Logged in as ${username} until ${localTime(session.expiresAt)}`,
  );
}
