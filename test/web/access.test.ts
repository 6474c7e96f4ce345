/**
 * The web client on a phone-sized screen and by keyboard alone, in the real Chromium against a real relay
 * and chain: at 360x740 no screen scrolls sideways (login, the list, a conversation); a person sets the
 * chain, registers, opens a chat, writes and sends a message and opens and closes the account menu with
 * Tab, Enter and Escape only, every focus stop showing a focus ring; every input has an accessible name.
 */
import { expect } from "chai";
import type { Locator, Page } from "playwright-core";
import { launchBrowser } from "./browser";
import { STEP_MS, expectNoProblemsBesideDefaultRpc, openConversation, registerInBrowser, waitForMessaging, waitForText, useWebStack } from "./app";
import type { WebStack } from "./stack";

const WIDTH = 360;
const HEIGHT = 740;
/** More Tab presses than any screen has focus stops. */
const MAX_TABS = 40;

/** Fails unless the focused element shows a ring (an outline or a box shadow). */
async function expectFocusRing(page: Page, what: string): Promise<void> {
  const focused = await page.evaluate(() => {
    const node = document.activeElement as HTMLElement | null;
    if (!node || node === document.body) return { what: "nothing", ring: false };
    const style = getComputedStyle(node);
    const outline = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) > 0;
    const shadow = style.boxShadow !== "none" && style.boxShadow !== "";
    return { what: `${node.tagName} "${node.getAttribute("aria-label") ?? node.textContent?.trim().slice(0, 40) ?? ""}"`, ring: outline || shadow };
  });
  expect(focused.ring, `${what}: focus ring on ${focused.what}`).to.equal(true);
}

/** Presses Tab (or Shift+Tab) until `target` has the focus, checking the focus ring at every stop. */
async function tabTo(page: Page, target: Locator, what: string, backwards = false): Promise<void> {
  for (let i = 0; i < MAX_TABS; i++) {
    await page.keyboard.press(backwards ? "Shift+Tab" : "Tab");
    if (await page.evaluate(() => document.activeElement !== document.body)) await expectFocusRing(page, what);
    if (await target.evaluate((node) => node === document.activeElement).catch(() => false)) return;
  }
  throw new Error(`${what}: ${MAX_TABS} presses of ${backwards ? "Shift+Tab" : "Tab"} never reached it`);
}

async function expectFocused(target: Locator, what: string): Promise<void> {
  await target.and(target.page().locator(":focus")).waitFor({ timeout: STEP_MS }).catch(() => {
    throw new Error(`${what} does not have the focus`);
  });
  await expectFocusRing(target.page(), what);
}

async function expectNoHorizontalScroll(page: Page, where: string): Promise<void> {
  const size = await page.evaluate(() => ({ scrollWidth: document.documentElement.scrollWidth, clientWidth: document.documentElement.clientWidth }));
  expect(size.clientWidth, `${where}: viewport width`).to.equal(WIDTH);
  expect(size.scrollWidth, `${where}: page width at ${WIDTH} px`).to.be.at.most(size.clientWidth);
}

/** Every visible input, textarea and select has an accessible name (as Playwright's accessibility tree computes it). */
async function expectNamedInputs(page: Page, where: string): Promise<number> {
  const fields = page.locator("input:not([type=hidden]), textarea, select").filter({ visible: true });
  const count = await fields.count();
  for (let i = 0; i < count; i++) {
    const snapshot = await fields.nth(i).ariaSnapshot();
    expect(snapshot, `${where}: input ${i} has no accessible name`).to.match(/^- \w+ "[^"]+"/);
  }
  return count;
}

describe("web client: phone size and keyboard only", function () {
  this.timeout(300_000);
  const web = useWebStack();
  const users = web.users;
  let stack: WebStack;
  before(() => {
    stack = web.stack();
  });

  it("at 360x740: no sideways scroll; set up, register, chat and use the account menu by keyboard alone", async () => {
    const ben = await registerInBrowser(stack, "ben");
    users.push(ben);

    const session = await launchBrowser();
    const watched = await session.newPage();
    users.push({ username: "cat", password: "", session, watched, page: watched.page });
    const page = watched.page;
    page.setDefaultTimeout(STEP_MS);
    await page.setViewportSize({ width: WIDTH, height: HEIGHT });
    await page.goto(stack.url);

    // Settings: the test chain's RPC and contract, typed.
    const rpc = page.getByLabel("Chain RPC URL");
    await rpc.waitFor();
    expect(await expectNamedInputs(page, "settings")).to.be.at.least(2);
    await expectNoHorizontalScroll(page, "settings");
    await tabTo(page, rpc, "Chain RPC URL");
    await page.keyboard.press("Control+A");
    await page.keyboard.type(stack.rpcUrl);
    await tabTo(page, page.getByLabel("ChatRegistry contract"), "ChatRegistry contract");
    await page.keyboard.press("Control+A");
    await page.keyboard.type(stack.contract);
    await page.keyboard.press("Enter");

    // The login screen; register from its tab.
    const loginForm = page.getByRole("form", { name: "Log in" });
    await loginForm.waitFor();
    await expectNoHorizontalScroll(page, "login screen");
    expect(await expectNamedInputs(page, "login screen")).to.equal(2);
    await tabTo(page, page.getByRole("navigation", { name: "Account" }).getByRole("button", { name: "Register" }), "the Register tab", true);
    await page.keyboard.press("Enter");
    const form = page.getByRole("form", { name: "Register" });
    await expectFocused(form.getByLabel("Username", { exact: true }), "the register form's username");
    expect(await expectNamedInputs(page, "register screen")).to.equal(3);
    const password = "pw-cat-correct horse";
    await page.keyboard.type("cat");
    await tabTo(page, form.getByLabel("Password", { exact: true }), "password");
    await page.keyboard.type(password);
    await tabTo(page, form.getByLabel("Password again"), "password again");
    await page.keyboard.type(password);
    await page.keyboard.press("Enter");
    await waitForMessaging(page);

    // The list.
    await expectNoHorizontalScroll(page, "conversation list");
    await expectNamedInputs(page, "conversation list");
    await tabTo(page, page.getByRole("button", { name: "New chat" }), "New chat");
    await page.keyboard.press("Enter");
    const dialog = page.getByRole("dialog");
    await expectFocused(dialog.getByLabel("Username"), "the New chat dialog's username");
    expect(await expectNamedInputs(page, "New chat dialog")).to.equal(1);
    await page.keyboard.type("ben");
    await page.keyboard.press("Enter");
    await dialog.waitFor({ state: "detached" });

    // The conversation: the composer has the focus; Enter sends.
    const composer = page.getByRole("textbox", { name: "Message to ben" });
    await expectFocused(composer, "the composer");
    await expectNamedInputs(page, "conversation");
    await page.keyboard.type("typed with the keyboard only");
    await page.keyboard.press("Enter");
    await waitForText(page, "ben", "typed with the keyboard only");
    await expectNoHorizontalScroll(page, "conversation");
    await openConversation(ben.page, "cat");
    await waitForText(ben.page, "cat", "typed with the keyboard only");

    // The account menu: opened with Enter (its first item takes the focus), closed with Escape.
    const menuButton = page.getByRole("button", { name: "cat ▾" });
    await tabTo(page, menuButton, "the account menu button", true);
    await page.keyboard.press("Enter");
    const menu = page.getByRole("menu");
    await menu.waitFor();
    expect(await menuButton.getAttribute("aria-expanded")).to.equal("true");
    await expectFocused(menu.getByRole("menuitem").first(), "the account menu's first item");
    await expectNoHorizontalScroll(page, "conversation with the account menu open");
    await tabTo(page, menu.getByRole("menuitem", { name: "Log out" }), "the Log out item");
    await page.keyboard.press("Escape");
    await menu.waitFor({ state: "hidden" });
    expect(await menuButton.getAttribute("aria-expanded")).to.equal("false");
    await expectFocused(menuButton, "the account menu button after Escape");

    expectNoProblemsBesideDefaultRpc(watched, "cat's page");
  });
});
