/**
 * chai with chai-as-promised registered: tests import `expect` from here so that
 * `await expect(promise).to.be.rejectedWith(...)` works even when one file runs alone (--grep).
 */
import chai from "chai";
import chaiAsPromised from "chai-as-promised";
import { ChatError } from "../../protocol/errors";

chai.use(chaiAsPromised);

export const expect = chai.expect;

function expectCode(error: ChatError, code: string, message?: RegExp): ChatError {
  expect(error.code, error.message).to.equal(code);
  if (message) expect(error.message).to.match(message);
  return error;
}

/** Asserts that `promise` rejects with a ChatError of `code` (and a message matching `message`); resolves to it. */
export async function expectRejectedCode(promise: Promise<unknown>, code: string, message?: RegExp): Promise<ChatError> {
  return expectCode(await expect(promise).to.be.rejectedWith(ChatError), code, message);
}

/** Asserts that `work` throws a ChatError of `code` (and a message matching `message`); returns it. */
export function expectThrownCode(work: () => unknown, code: string, message?: RegExp): ChatError {
  try {
    work();
  } catch (error) {
    expect(error, String(error)).to.be.instanceOf(ChatError);
    return expectCode(error as ChatError, code, message);
  }
  return expect.fail(`expected ${code}`);
}
