/**
 * Two people chat in the web client, in the real Chromium against a real relay, chain and MariaDB: both
 * register in their own browser profile, talk live both ways, and one reads on return what was sent while
 * its page was closed; and a click on the conversation list is not lost to a message arriving mid-click.
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

  it("a click pressed on a conversation while a message arrives still opens it", async () => {
    const cat = await registerInBrowser(stack, "cat");
    const dan = await registerInBrowser(stack, "dan");
    users.push(cat, dan);
    await startChat(cat.page, "dan");
    await sendText(cat.page, "dan", "first");
    const entry = dan.page.getByRole("navigation", { name: "Conversations" }).getByRole("button", { name: /cat/ });
    await entry.getByLabel("1 unread").waitFor();

    // dan presses on the entry; the list changes under the pressed button before the release
    const box = await entry.boundingBox();
    expect(box, "the entry is laid out").to.not.equal(null);
    await dan.page.mouse.move(box!.x + box!.width / 2, box!.y + box!.height / 2);
    await dan.page.mouse.down();
    await sendText(cat.page, "dan", "second");
    await entry.getByLabel("2 unread").waitFor();
    await dan.page.mouse.up();

    // One click, no retry: the press and the release landed on the same entry, so the conversation opens.
    await dan.page.getByRole("textbox", { name: "Message to cat" }).waitFor({ timeout: 10_000 });
    await waitForText(dan.page, "cat", "second");
  });
});
