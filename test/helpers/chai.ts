/**
 * chai with chai-as-promised registered: tests import `expect` from here so that
 * `await expect(promise).to.be.rejectedWith(...)` works even when one file runs alone (--grep).
 */
import chai from "chai";
import chaiAsPromised from "chai-as-promised";

chai.use(chaiAsPromised);

export const expect = chai.expect;
