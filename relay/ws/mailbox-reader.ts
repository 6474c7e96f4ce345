import type { Mailbox, StoredMessage } from "../storage/mailbox";

/**
 * A recipient's pending messages in mailbox order, one page per query, so that a large backlog is never
 * held in memory at once. The consumer stops early by leaving its `for await` loop.
 */
export async function* pendingPages(params: {
  mailbox: Mailbox;
  recipient: string;
  clock: () => number;
  pageSize: number;
}): AsyncGenerator<StoredMessage[]> {
  const { mailbox, recipient, clock, pageSize } = params;
  let afterSeq: string | undefined;
  for (;;) {
    const page = await mailbox.pending({ recipient, now: clock(), afterSeq, limit: pageSize });
    yield page;
    if (page.length < pageSize) return;
    afterSeq = page[page.length - 1].seq;
  }
}
