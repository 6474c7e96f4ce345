import { expect } from "chai";
import { readableLogLine } from "../../scripts/log-lines";

describe("npm start: readable relay log lines", () => {
  const time = Date.UTC(2026, 11, 1, 9, 5, 7);

  it("an info line becomes the local time, the message and the fields worth a glance", () => {
    const line = JSON.stringify({ level: 30, time, pid: 1, hostname: "h", service: "relay", username: "alice", keyIndex: 0, msg: "logged in" });
    expect(readableLogLine(line, "UTC")).to.equal("09:05:07 logged in (username=alice)");
  });

  it("warnings and errors are named in plain words", () => {
    expect(readableLogLine(JSON.stringify({ level: 40, time, msg: "chain cache sync failed; retrying" }), "UTC")).to.equal(
      "09:05:07 warning: chain cache sync failed; retrying",
    );
    expect(readableLogLine(JSON.stringify({ level: 50, time, msg: "close failed", err: "boom" }), "UTC")).to.equal("09:05:07 error: close failed (err=boom)");
  });

  it("a logged name cannot drive the terminal, and long lines are cut", () => {
    const hostile = JSON.stringify({ level: 30, time, msg: "logged in", username: "a\u001b[2Jb\u202e" });
    const shown = readableLogLine(hostile, "UTC");
    expect(shown).to.not.match(/[\u0000-\u001f\u202e]/);
    expect(shown).to.contain("\\u001b[2Jb\\u202e");
    expect(readableLogLine(JSON.stringify({ level: 30, time, msg: "x".repeat(500) }), "UTC")).to.have.length(160);
  });

  it("lines that are not JSON pass through, made inert", () => {
    expect(readableLogLine("Error: something\u0007", "UTC")).to.equal("Error: something\\u0007");
  });
});
