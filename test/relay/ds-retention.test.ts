/**
 * The relay purges its v2 store on its own: a group's log entries older than DS_LOG_TTL_DAYS go once every
 * member's device has read them, and an entry someone has not read stays, however old. One real relay
 * process over MariaDB, with a retention of about a second and a purge every second.
 */
import { expect } from "chai";
import { randomBytes } from "node:crypto";
import { sleep, waitFor } from "../helpers/wait";
import { bytes, useRawDs, type Session } from "./ds-raw-fixture";

const RETENTION_SECONDS = 1;

describe("relay: the v2 log's retention", function () {
  this.timeout(120_000);
  const ds = useRawDs("ds_retention", { env: { DS_LOG_TTL_DAYS: String(RETENTION_SECONDS / 86_400), DS_PURGE_INTERVAL_SECONDS: "1" } });
  const { user, call, groupOf } = ds;
  const seqsOf = async (who: Session, deviceId: string, groupId: string): Promise<number[]> =>
    (await call(who, deviceId, "GET", `/v2/groups/${groupId}/log?after=0&limit=500`)).entries.map((e: { seq: number }) => e.seq);

  it("deletes what every member has read once it is old enough, and keeps what one member has not", async () => {
    const owner = await user("rt_o");
    const member = await user("rt_m");
    const groupId = await groupOf(owner, [member]);
    for (let i = 0; i < 3; i++) await call(owner, "o1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `rt-${randomBytes(6).toString("hex")}`, bytes: bytes() });
    expect(await seqsOf(member, "m1", groupId)).to.deep.equal([1, 2, 3, 4]);
    await call(owner, "o1", "POST", `/v2/groups/${groupId}/cursor`, { seq: 4 });
    await call(member, "m1", "POST", `/v2/groups/${groupId}/cursor`, { seq: 3 });

    await waitFor("entries 1 to 3 purged", async () => (await seqsOf(member, "m1", groupId)).length === 1, 20_000, 200);
    expect(await seqsOf(member, "m1", groupId)).to.deep.equal([4]);
    // Several purges later, the entry the member has not read is still there.
    await sleep(3_000 * RETENTION_SECONDS);
    expect(await seqsOf(owner, "o1", groupId)).to.deep.equal([4]);

    await call(member, "m1", "POST", `/v2/groups/${groupId}/cursor`, { seq: 4 });
    await waitFor("entry 4 purged", async () => (await seqsOf(member, "m1", groupId)).length === 0, 20_000, 200);
    // The group goes on: the next message takes the next seq.
    const next = await call(member, "m1", "POST", `/v2/groups/${groupId}/messages`, { epoch: 1, id: `rt-${randomBytes(6).toString("hex")}`, bytes: bytes() });
    expect(next.seq).to.equal(5);
  });
});
