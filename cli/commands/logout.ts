import type { Context } from "../context";

/** chat logout: forgets the token and the unlocked keys (the password-encrypted keystores stay). */
export async function logout(ctx: Pick<Context, "sessions" | "out">): Promise<void> {
  const session = ctx.sessions.read();
  const existed = ctx.sessions.delete();
  ctx.out.data({ type: "logout", username: session?.username ?? null, wasLoggedIn: existed }, existed ? `Logged out ${session?.username}` : "Not logged in");
}
