/**
 * The web client sends its texts over the notice WebSocket it holds (append frames, cursor frames), and a
 * socket that drops once the relay stored a text, before its answer reaches the page, costs nothing: the
 * page sends the same id over HTTP and the text is stored and shown once. Real Chromium, relay, chain and
 * MariaDB; the page's socket goes through Playwright's WebSocket route, which sees and cuts it.
 */
import { expect } from "chai";
import { loginInBrowser, openConversation, registerInBrowser, sendText, startChat, timelineTexts, useWebStack, waitForText } from "./app";
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
    await ann.page.routeWebSocket(/\/v1\/ws$/, (page) => {
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
    expect(cut).to.have.length(1);
    expect(posted).to.deep.equal([cut[0].id]);
    await ann.page.getByRole("list", { name: "Messages with ben" }).locator("li", { hasText: "cut mid-way" }).getByText(/delivered/i).waitFor();

    // ben answers; ann's device moves its cursor with a frame on its (reconnected) socket.
    await sendText(ben.page, "ann", "got it");
    await waitForText(ann.page, "ben", "got it");
    expect(await waitForFrame(sent, "cursor"), "a cursor frame").to.equal(true);

    const count = (texts: string[], body: string) => texts.filter((t) => t.includes(body)).length;
    for (const body of ["over the socket", "cut mid-way"]) {
      expect(count(await timelineTexts(ben.page, "ann"), body), `ben: ${body}`).to.equal(1);
      expect(count(await timelineTexts(ann.page, "ben"), body), `ann: ${body}`).to.equal(1);
    }
  });
});

async function waitForFrame(sent: any[], type: string): Promise<boolean> {
  for (let i = 0; i < 200; i++) {
    if (sent.some((f) => f.type === type)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}
