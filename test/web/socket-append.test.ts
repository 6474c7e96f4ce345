/**
 * The web client sends its texts over the notice WebSocket it holds (append frames, cursor frames), and a
 * socket that drops once the relay stored a text, before its answer reaches the page, costs nothing: the
 * page sends the same id over HTTP and the text is stored and shown once. Real Chromium, relay, chain and
 * MariaDB; the page's socket goes through Playwright's WebSocket route, which sees and cuts it. The page asks
 * for early frames: the others' texts reach it before the relay stored them, and each shows once.
 */
import { expect } from "chai";
import { loginInBrowser, openConversation, registerInBrowser, sendText, startChat, timelineTexts, useWebStack, waitForText } from "./app";
import { waitFor } from "../helpers/wait";
import type { WebStack } from "./stack";

describe("web client: texts over the WebSocket, HTTP with the same id when it drops mid-append", function () {
  this.timeout(300_000);
  const web = useWebStack();
  const users = web.users;
  let stack: WebStack;
  before(() => {
    stack = web.stack();
  });

  it("texts go as append frames; the one whose answer is cut is POSTed with its id and shown once on both sides", async () => {
    const ann = await registerInBrowser(stack, "ann");
    const ben = await registerInBrowser(stack, "ben");
    users.push(ann, ben);

    // ann's page again, its socket routed: every frame it sends is seen, and the next append can be cut.
    await ann.page.close();
    const again = await ann.session.newPage();
    ann.page = again.page;
    ann.watched = again;
    const sent: any[] = [];
    const cut: any[] = [];
    let cutNext = false;
    const received: any[] = [];
    let logOutOfReach = false;
    await ann.page.routeWebSocket(/\/v1\/ws(\?.*)?$/, (page) => {
      const relay = page.connectToServer();
      let cutting: any;
      page.onMessage((message) => {
        const frame = JSON.parse(String(message));
        sent.push(frame);
        if (cutNext && frame.type === "append") {
          cutNext = false;
          cutting = frame;
        }
        relay.send(message);
      });
      relay.onMessage((message) => {
        const frame = JSON.parse(String(message));
        received.push(frame);
        // While the log is out of the page's reach, so are the notices that would send it there.
        if (logOutOfReach && frame.type === "group") return;
        if (!cutting) return page.send(message);
        // Nothing reaches the page any more; the relay's answer (sent once the text is durable) cuts the socket.
        if (String(message).includes('"type":"appended"')) {
          cut.push(cutting);
          page.close({ code: 1011, reason: "cut" });
          relay.close();
        }
      });
    });
    const posted: string[] = [];
    ann.page.on("request", (request) => {
      if (request.method() === "POST" && /\/v2\/groups\/[0-9a-f]{64}\/messages$/.test(request.url())) posted.push(JSON.parse(request.postData() ?? "{}").id);
    });
    await ann.page.goto(stack.url);
    await loginInBrowser(ann);

    await startChat(ann.page, "ben");
    await sendText(ann.page, "ben", "over the socket");
    await openConversation(ben.page, "ann");
    await waitForText(ben.page, "ann", "over the socket");
    expect(sent.filter((f) => f.type === "append")).to.have.length(1);
    expect(posted, "no text over HTTP while the socket is open").to.deep.equal([]);

    cutNext = true;
    await sendText(ann.page, "ben", "cut mid-way");
    await waitForText(ben.page, "ann", "cut mid-way");
    // ben's page may show it from its early frame before the relay answers ann's append (the answer is the cut).
    await waitFor("the cut answer and the text sent again over HTTP", () => cut.length === 1 && posted.length > 0, 30_000, 20);
    expect(cut).to.have.length(1);
    expect(posted).to.deep.equal([cut[0].id]);
    await ann.page.getByRole("list", { name: "Messages with ben" }).locator("li", { hasText: "cut mid-way" }).getByText(/delivered/i).waitFor();

    // ben answers; ann's device moves its cursor with a frame on its (reconnected) socket.
    await sendText(ben.page, "ann", "got it");
    await waitForText(ann.page, "ben", "got it");
    expect(await waitForFrame(sent, "cursor"), "a cursor frame").to.equal(true);

    // The page asked for early frames: ben's texts show from them alone, while every way to the log (its
    // reads, syncs and notices) is cut; then they show once, their log entries passed over.
    await ann.page.route(/\/v2\/(sync|groups\/[0-9a-f]{64}\/log)/, (route) => (logOutOfReach ? route.abort() : route.continue()));
    logOutOfReach = true;
    for (const body of ["early one", "early two"]) {
      await sendText(ben.page, "ann", body);
      await waitForText(ann.page, "ben", body);
    }
    logOutOfReach = false;
    expect(received.filter((f) => f.type === "early").map((f) => f.groupId)).to.have.length.greaterThan(1);

    const count = (texts: string[], body: string) => texts.filter((t) => t.includes(body)).length;
    for (const body of ["over the socket", "cut mid-way"]) {
      expect(count(await timelineTexts(ben.page, "ann"), body), `ben: ${body}`).to.equal(1);
      expect(count(await timelineTexts(ann.page, "ben"), body), `ann: ${body}`).to.equal(1);
    }
    // Shown once even after the sync that reads their log entries (a reload reads the stored timeline).
    await ann.page.reload();
    await loginInBrowser(ann);
    await openConversation(ann.page, "ben");
    for (const body of ["got it", "early one", "early two"]) {
      await waitForText(ann.page, "ben", body);
      expect(count(await timelineTexts(ann.page, "ben"), body), `ann: ${body}`).to.equal(1);
    }
    expect(count(await timelineTexts(ann.page, "ben"), "refused an entry"), "no entry refused").to.equal(0);
  });
});

async function waitForFrame(sent: any[], type: string): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (sent.some((f) => f.type === type)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
