/**
 * What the web client keeps in the browser, in the real Chromium against a real relay and chain: a reload
 * keeps the history (same messages, same order, same delivery states); at rest no message body, password
 * or private key is readable in any IndexedDB value or in localStorage; logout from the account menu
 * deletes every IndexedDB database and the session data (settings stay), returns to the login screen, and
 * a login afterwards fails with a clear error, since the key is gone.
 */
import { readFileSync } from "node:fs";
import { expect } from "chai";
import { decryptKeystoreJson } from "ethers";
import type { Page } from "playwright-core";
import { STEP_MS, expectNoProblemsBesideDefaultRpc, loginInBrowser, openConversation, registerInBrowser, sendText, startChat, waitForText, useWebStack, type BrowserUser } from "./app";
import type { WebStack } from "./stack";

interface ShownItem {
  kind: string;
  from: string;
  body: string;
  state: string;
}

/** The open conversation's items as shown: kind, sender, body (or event text) and delivery state. */
async function shownItems(page: Page, title: string): Promise<ShownItem[]> {
  return page.getByRole("list", { name: `Messages with ${title}` }).evaluate((timeline) =>
    Array.from(timeline.children).map((li) => ({
      kind: li.className,
      from: li.querySelector(".from")?.textContent ?? "",
      body: (li.querySelector(".body") ?? li).textContent ?? "",
      state: li.querySelector(".state")?.textContent ?? "",
    })),
  );
}

interface StoredValue {
  where: string;
  text: string;
}

/** Every value of every IndexedDB database of the page's origin, and of localStorage, as text (bytes as hex and Latin-1). */
async function everythingStored(page: Page): Promise<{ databases: string[]; values: StoredValue[] }> {
  return page.evaluate(async () => {
    const hex = (bytes: Uint8Array) => Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    const latin1 = (bytes: Uint8Array) => Array.from(bytes, (b) => String.fromCharCode(b)).join("");
    const asText = (value: unknown): string =>
      JSON.stringify(value, (_key, v: unknown) => {
        if (v instanceof ArrayBuffer) v = new Uint8Array(v);
        if (ArrayBuffer.isView(v)) {
          const bytes = new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
          return `${hex(bytes)} ${latin1(bytes)}`;
        }
        return v;
      }) ?? String(value);
    const values: { where: string; text: string }[] = [];
    const databases = (await indexedDB.databases()).map((info) => info.name ?? "");
    for (const name of databases) {
      const db = await new Promise<IDBDatabase>((resolve, reject) => {
        const req = indexedDB.open(name);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      for (const store of Array.from(db.objectStoreNames)) {
        const [keys, all] = await new Promise<[IDBValidKey[], unknown[]]>((resolve, reject) => {
          const tx = db.transaction(store, "readonly");
          const keysReq = tx.objectStore(store).getAllKeys();
          const valuesReq = tx.objectStore(store).getAll();
          tx.oncomplete = () => resolve([keysReq.result, valuesReq.result]);
          tx.onerror = () => reject(tx.error);
        });
        all.forEach((value, i) => values.push({ where: `${name}/${store}/${String(keys[i])}`, text: `${asText(keys[i])} ${asText(value)}` }));
      }
      db.close();
    }
    for (let i = 0; i < localStorage.length; i++) {
      const key = localStorage.key(i)!;
      values.push({ where: `localStorage/${key}`, text: `${key} ${localStorage.getItem(key)}` });
    }
    return { databases, values };
  });
}

/** The current key's keystore through the account menu's "Download key backup", decrypted here with the password. */
async function downloadPrivateKey(user: BrowserUser): Promise<string> {
  await user.page.getByRole("button", { name: `${user.username} ▾` }).click();
  const [download] = await Promise.all([user.page.waitForEvent("download"), user.page.getByRole("menuitem", { name: "Download key backup" }).click()]);
  const json = readFileSync(await download.path(), "utf8");
  const account = await decryptKeystoreJson(json, user.password);
  return account.privateKey.toLowerCase().replace(/^0x/, "");
}

describe("web client: history across reloads, nothing readable at rest, logout wipes", function () {
  this.timeout(400_000);
  const web = useWebStack();
  const users = web.users;
  let stack: WebStack;
  before(() => {
    stack = web.stack();
  });

  it("reload keeps the conversation; storage holds no plaintext, password or key; logout deletes it all", async () => {
    const ann = await registerInBrowser(stack, "ann");
    const ben = await registerInBrowser(stack, "ben");
    users.push(ann, ben);
    const tag = Math.random().toString(36).slice(2, 10);
    const bodies = [`from ann, first ${tag}`, `from ben, first ${tag}`, `from ann, second ${tag}`, `from ben, second ${tag}`];

    await startChat(ann.page, "ben");
    await sendText(ann.page, "ben", bodies[0]);
    await openConversation(ben.page, "ann");
    await waitForText(ben.page, "ann", bodies[0]);
    await sendText(ben.page, "ann", bodies[1]);
    await waitForText(ann.page, "ben", bodies[1]);
    await sendText(ann.page, "ben", bodies[2]);
    await waitForText(ben.page, "ann", bodies[2]);
    await sendText(ben.page, "ann", bodies[3]);
    await waitForText(ann.page, "ben", bodies[3]);
    // every text of each reaches "delivered" once the other's device has read past it
    for (const [user, title] of [[ann, "ben"], [ben, "ann"]] as const) {
      const timeline = user.page.getByRole("list", { name: `Messages with ${title}` });
      await timeline.locator("li.mine .state-delivered").nth(1).waitFor();
      expect(await timeline.locator("li.mine").count()).to.equal(2);
    }

    // (a) a reload keeps the history: same items, same order, same delivery states
    const before = await shownItems(ann.page, "ben");
    expect(before.filter((item) => item.kind.includes("message")).map((item) => [item.from, item.body, item.state])).to.deep.equal([
      ["You", bodies[0], "delivered"],
      ["ben", bodies[1], ""],
      ["You", bodies[2], "delivered"],
      ["ben", bodies[3], ""],
    ]);
    expectNoProblemsBesideDefaultRpc(ann.watched, "ann's page before the reload");
    await ann.page.reload();
    await loginInBrowser(ann);
    await openConversation(ann.page, "ben");
    await waitForText(ann.page, "ben", bodies[3]);
    expect(await shownItems(ann.page, "ben"), "ann's conversation after the reload").to.deep.equal(before);

    // (b) at rest nothing is readable: no body, no password, no private key in any stored value
    const privateKey = await downloadPrivateKey(ann);
    expect(privateKey).to.match(/^[0-9a-f]{64}$/);
    const stored = await everythingStored(ann.page);
    expect(stored.databases).to.include.members(["eth-chat", "eth-chat-mls-ann"]);
    expect(stored.values.some((v) => v.where.startsWith("eth-chat/keystores/") && v.text.includes("crypto") && v.text.includes("ciphertext")), "the keystore is stored, encrypted").to.equal(true);
    expect(stored.values.some((v) => v.where.startsWith("eth-chat-mls-ann/records/history/")), "the history is stored").to.equal(true);
    const keyBytes = Buffer.from(privateKey, "hex");
    const secrets = [
      ...bodies.flatMap((b) => [b, tag, Buffer.from(b).toString("hex"), Buffer.from(b).toString("base64")]),
      ann.password,
      Buffer.from(ann.password).toString("hex"),
      privateKey,
      keyBytes.toString("base64"),
      keyBytes.toString("latin1"),
    ];
    for (const value of stored.values) {
      const lower = value.text.toLowerCase();
      const found = secrets.filter((secret) => value.text.includes(secret) || lower.includes(secret.toLowerCase()));
      expect(found.length, `${value.where} holds a secret`).to.equal(0);
    }

    // (c) logout from the account menu: no IndexedDB database, no session data, the login screen
    await ann.page.getByRole("button", { name: "ann ▾" }).click();
    await ann.page.getByRole("menuitem", { name: "Log out" }).click();
    await ann.page.getByRole("dialog").getByRole("button", { name: "Log out and delete local data" }).click();
    await ann.page.getByRole("form", { name: "Log in" }).waitFor();
    // a deletion the browser had to queue behind a closing connection finishes shortly after
    const deadline = Date.now() + 10_000;
    let left = await ann.page.evaluate(async () => (await indexedDB.databases()).map((info) => info.name));
    while (left.length > 0 && Date.now() < deadline) {
      await ann.page.waitForTimeout(200);
      left = await ann.page.evaluate(async () => (await indexedDB.databases()).map((info) => info.name));
    }
    expect(left, "IndexedDB databases after logout").to.deep.equal([]);
    const localKeys = await ann.page.evaluate(() => Object.keys(localStorage));
    expect(localKeys, "only the settings stay in localStorage").to.deep.equal(["eth-chat:settings"]);
    expect(await ann.page.evaluate(() => sessionStorage.length)).to.equal(0);

    // logging in again is impossible without the key: a clear error, the form stays
    const form = ann.page.getByRole("form", { name: "Log in" });
    await form.getByLabel("Username").fill("ann");
    await form.getByLabel("Password").fill(ann.password);
    await form.getByRole("button", { name: "Log in" }).click();
    await ann.page.getByRole("alert").filter({ hasText: /WRONG_KEY|NO_LOCAL_KEY/ }).waitFor();
    expect(await ann.page.getByRole("alert").filter({ hasText: /WRONG_KEY|NO_LOCAL_KEY/ }).textContent()).to.match(/ann/);
    await form.getByRole("button", { name: "Log in" }).and(ann.page.locator(":enabled")).waitFor();
    expect(await ann.page.getByRole("button", { name: "New chat" }).count()).to.equal(0);
    expectNoProblemsBesideDefaultRpc(ann.watched, "ann's page");
    expectNoProblemsBesideDefaultRpc(ben.watched, "ben's page");
  });
});
