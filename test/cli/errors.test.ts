/** The client's error lines: hints a person can act on, and every printable code documented. */
import { expect } from "chai";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ChatError, ERROR_CODES } from "../../protocol/errors";
import { describeError, parseUsername } from "../../cli/errors";

describe("chat error lines", () => {
  it("INVALID_USERNAME suggests the lower-case spelling when that one is valid", () => {
    expect(() => parseUsername("Bob")).to.throw(ChatError, /did you mean bob\?$/);
    expect(() => parseUsername("b!")).to.throw(ChatError).that.satisfies((e: ChatError) => e.code === "INVALID_USERNAME" && !/did you mean/.test(e.message));
    expect(parseUsername("bob")).to.equal("bob");
  });

  it("RELAY_UNREACHABLE on the default address asks whether `npm start` is running; elsewhere it does not", () => {
    const refused = describeError(new ChatError("RELAY_UNREACHABLE", "relay unreachable at https://127.0.0.1:8443 (ECONNREFUSED)"));
    expect(refused.message).to.equal("relay unreachable at https://127.0.0.1:8443 (ECONNREFUSED): nothing listens there; is `npm start` running?");
    const other = describeError(new ChatError("RELAY_UNREACHABLE", "relay unreachable at https://127.0.0.1:9999 (ECONNREFUSED)"));
    expect(other.message).to.equal("relay unreachable at https://127.0.0.1:9999 (ECONNREFUSED)");
  });

  it("an error line cannot carry escape sequences from a relay's message", () => {
    expect(describeError(new ChatError("BAD_REQUEST", "bad \x1b[2J\u202e")).message).to.equal("bad \\x1b[2J\\u202e");
  });

  it("every error code is in the README's list", () => {
    const readme = readFileSync(path.resolve(__dirname, "../../README.md"), "utf8");
    const section = readme.slice(readme.indexOf("## Using chat"), readme.indexOf("## The contract"));
    const missing = ERROR_CODES.filter((code) => !section.includes(`\`${code}\``));
    expect(missing).to.deep.equal([]);
  });
});
