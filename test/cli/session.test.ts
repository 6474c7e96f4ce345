/** The session's rules, on a memory store: one relay, and gone once expired. */
import { expect } from "chai";
import { ChatError } from "../../protocol/errors";
import { currentSession, requireSession } from "../../cli/session";
import { MemorySessionStore } from "../../cli/stores/session-store";

const codeOf = (work: () => unknown): string | undefined => {
  try {
    work();
  } catch (error) {
    expect(error).to.be.instanceOf(ChatError);
    return (error as ChatError).code;
  }
  return undefined;
};

describe("cli/session", () => {
  const session = { relay: "https://relay-a", username: "alice", token: "t", expiresAt: 2_000, keyIndex: 0, keys: [] };

  it("is required for its own relay only, and NOT_LOGGED_IN without one", () => {
    const sessions = new MemorySessionStore();
    expect(codeOf(() => requireSession(sessions, "https://relay-a", 1_000))).to.equal("NOT_LOGGED_IN");
    sessions.write(session);
    expect(requireSession(sessions, "https://relay-a", 1_000).username).to.equal("alice");
    expect(codeOf(() => requireSession(sessions, "https://relay-b", 1_000))).to.equal("NOT_LOGGED_IN");
    expect(currentSession(sessions, "https://relay-b", 1_000)).to.equal(undefined);
  });

  it("ends at its expiry: SESSION_EXPIRED once, and the token and keys are dropped", () => {
    const sessions = new MemorySessionStore();
    sessions.write(session);
    expect(currentSession(sessions, "https://relay-a", 2_000)).to.equal(undefined);
    expect(codeOf(() => requireSession(sessions, "https://relay-a", 2_000))).to.equal("SESSION_EXPIRED");
    expect(sessions.read()).to.equal(undefined);
    expect(codeOf(() => requireSession(sessions, "https://relay-a", 2_000))).to.equal("NOT_LOGGED_IN");
  });
});
