import type { Context } from "../context";
import { deleteSession, readSession } from "../session";

/** chat logout: forgets the token and the unlocked keys (the password-encrypted keystores stay). */
export async function logout(ctx: Context): Promise<void> {
  const session = readSession(ctx.home);
  const existed = deleteSession(ctx.home);
  ctx.out.data({ type: "logout", username: session?.username ?? null, wasLoggedIn: existed }, existed ? `Logged out ${session?.username}` : "Not logged in");
}
