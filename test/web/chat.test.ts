/**
 * Two people chat in the web client, in the real Chromium against a real relay, chain and MariaDB: both
 * register in their own browser profile, talk live both ways, and one reads on return what was sent while
 * its page was closed.
 */
import { expect } from "chai";
import { loginInBrowser, openConversation, registerInBrowser, sendText, startChat, waitForText, useWebStack } from "./app";
import type { WebStack } from "./stack";

describe("web client: two browser users chat", function () {
  this.timeout(300_000);
  const web = useWebStack();
  const users = web.users;
  let stack: WebStack;
  before(() => {
    stack = web.stack();
  });

  it("register, chat live both ways, and read on return what came while away", async () => {
    const ann = await registerInBrowser(stack, "ann");
    const ben = await registerInBrowser(stack, "ben");
    users.push(ann, ben);

    await startChat(ann.page, "ben");
    await sendText(ann.page, "ben", "hello ben, from ann's browser");
    await openConversation(ben.page, "ann");
    await waitForText(ben.page, "ann", "hello ben, from ann's browser");
    await sendText(ben.page, "ann", "hi ann, ben here");
    await waitForText(ann.page, "ben", "hi ann, ben here");
    // ann's first text reaches "delivered" once ben's device has read past it
    await ann.page.getByRole("list", { name: "Messages with ben" }).locator("li", { hasText: "hello ben" }).getByText(/delivered/i).waitFor();

    // ben's page closes; ann writes; ben comes back in the same browser profile and logs in
    await ben.page.close();
    await sendText(ann.page, "ben", "while you were away");
    const back = await ben.session.newPage();
    ben.page = back.page;
    ben.watched = back;
    await ben.page.goto(stack.url);
    await loginInBrowser(ben);
    await openConversation(ben.page, "ann");
    await waitForText(ben.page, "ann", "while you were away");
    await waitForText(ben.page, "ann", "hello ben, from ann's browser");
    expect(await ben.page.getByRole("list", { name: "Messages with ann" }).locator("li", { hasText: "while you were away" }).count()).to.equal(1);
  });
});
