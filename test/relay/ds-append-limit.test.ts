/**
 * The per-user limit on POSTed messages and commits (RATE_LIMIT_APPENDS_PER_USER per rate-limit window), against
 * a real relay process: a user who floods the Delivery Service over HTTP is refused 429 RATE_LIMITED with the
 * wait, stores nothing more, and leaves everyone else's appends alone. WebSocket appends count against the
 * socket's own send rate instead.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { bytes, useRawDs } from "./ds-raw-fixture";
import { waitFor } from "../helpers/wait";

const LIMIT = 6;
const messageId = () => `l-${randomBytes(6).toString("hex")}`;

describe("relay: the per-user limit on POSTed appends", function () {
  this.timeout(120_000);
  const ds = useRawDs("ds_append_limit", { env: { RATE_LIMIT_APPENDS_PER_USER: String(LIMIT) } });

  it("refuses a user's appends beyond the limit with 429 and the wait, messages and commits alike; other users and the user's socket go on", async () => {
    const owner = await ds.user("al_o");
    const member = await ds.user("al_m");
    // The group's add commit is the owner's first append of the window.
    const groupId = await ds.groupOf(owner, [member]);
    const post = (who: typeof owner, deviceId: string) =>
      ds.request(who, deviceId, "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: messageId(), bytes: bytes(40) });

    const answers = [];
    for (let i = 0; i < LIMIT + 2; i++) answers.push(await post(owner, "o1"));
    expect(answers.map((a) => a.status)).to.deep.equal([...Array(LIMIT - 1).fill(200), 429, 429, 429]);
    const refused = answers[LIMIT - 1].body.error;
    expect(refused.code).to.equal("RATE_LIMITED");
    expect(refused.retryAfterSeconds).to.be.a("number").that.is.greaterThan(0);
    // A commit counts too (refused before it is even looked at).
    const commit = await ds.request(owner, "o1", "POST", `/v2/groups/${groupId}/commits`, { epoch: 1, id: messageId(), bytes: bytes(40), add: [], remove: [], welcomes: [] });
    expect(commit.status).to.equal(429);
    expect(commit.body.error.code).to.equal("RATE_LIMITED");

    // Nothing refused was stored: the commit and the accepted messages only.
    const log = (await ds.call(member, "m1", "GET", `/v2/groups/${groupId}/log?after=0&limit=100`)).entries;
    expect(log).to.have.length(1 + (LIMIT - 1));

    // Another user's budget is its own.
    expect((await post(member, "m1")).status).to.equal(200);
    // The owner's socket appends count against the socket's send rate, not this limit.
    const socket = await ds.listen(owner.token);
    const id = messageId();
    socket.send({ type: "append", groupId, deviceId: "o1", epoch: 1, id, bytes: bytes(40) });
    const answer = await waitFor("the socket append's answer", () => socket.frames.find((f) => (f.type === "appended" || f.type === "error") && f.id === id), 15_000, 10);
    expect(answer).to.include({ type: "appended", id });
  });
});
