import { expect } from "chai";
import { Interface } from "ethers";
import { REGISTRY_READ_ABI } from "../../cli/abi";
import { abi as compiledAbi } from "../../artifacts/contracts/interfaces/IChatRegistry.sol/IChatRegistry.json";

describe("cli/abi", () => {
  it("the CLI's human-readable ABI matches the compiled IChatRegistry (selectors, inputs, outputs, view)", () => {
    const mine = new Interface(REGISTRY_READ_ABI as unknown as string[]);
    const compiled = new Interface(compiledAbi);
    let checked = 0;
    mine.forEachFunction((fn) => {
      const other = compiled.getFunction(fn.name);
      expect(other, fn.name).to.not.equal(null);
      expect(fn.selector, fn.name).to.equal(other!.selector);
      expect(fn.outputs.map((o) => o.format("full")), fn.name).to.deep.equal(other!.outputs.map((o) => o.format("full")));
      expect(fn.stateMutability, fn.name).to.equal(other!.stateMutability);
      checked++;
    });
    expect(checked).to.equal(REGISTRY_READ_ABI.length);
  });
});
