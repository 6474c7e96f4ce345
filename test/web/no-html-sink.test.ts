/**
 * The web client never interprets text as HTML: no source under web/src assigns innerHTML or outerHTML,
 * calls insertAdjacentHTML, document.write, DOMParser, createContextualFragment, or sets srcdoc. Text goes
 * into the page only through textContent, attributes and createElement (web/src/ui/dom.ts).
 * Checked on the syntax tree, so that words in comments do not count and a computed access cannot hide.
 */
import { readFileSync, readdirSync } from "node:fs";
import path from "node:path";
import ts from "typescript";
import { expect } from "../helpers/chai";

const WEB_SRC = path.join(__dirname, "..", "..", "web", "src");
const DOCUMENT_ONLY = new Set(["write", "writeln"]);
const SINK_NAMES = new Set(["innerHTML", "outerHTML", "insertAdjacentHTML", "write", "writeln", "createContextualFragment", "srcdoc", "parseFromString", "setHTMLUnsafe"]);
const SINK_CONSTRUCTORS = new Set(["DOMParser"]);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sources(full);
    return /\.(ts|tsx|js|mjs)$/.test(entry.name) ? [full] : [];
  });
}

/** Every HTML sink in one file's text, as "line: what". */
export function htmlSinks(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const at = (node: ts.Node, what: string) => found.push(`${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${what}`);
  const visit = (node: ts.Node): void => {
    // write/writeln are sinks on a document only; other objects' write() (a store's) are not.
    if (ts.isPropertyAccessExpression(node) && SINK_NAMES.has(node.name.text) && (!DOCUMENT_ONLY.has(node.name.text) || /(^|\.)document$/.test(node.expression.getText(source)))) {
      at(node, node.name.text);
    }
    if (ts.isElementAccessExpression(node) && ts.isStringLiteralLike(node.argumentExpression) && SINK_NAMES.has(node.argumentExpression.text)) {
      at(node, node.argumentExpression.text);
    }
    if (ts.isNewExpression(node) && ts.isIdentifier(node.expression) && SINK_CONSTRUCTORS.has(node.expression.text)) at(node, `new ${node.expression.text}`);
    // setAttribute("srcdoc", …) and on… handler attributes from strings
    if (ts.isCallExpression(node) && ts.isPropertyAccessExpression(node.expression) && node.expression.name.text === "setAttribute") {
      const [name] = node.arguments;
      if (name && ts.isStringLiteralLike(name) && (/^on/i.test(name.text) || name.text.toLowerCase() === "srcdoc")) at(node, `setAttribute("${name.text}")`);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

describe("web/src never interprets text as HTML", () => {
  it("has no HTML sink in any source file", () => {
    const files = sources(WEB_SRC);
    expect(files.length).to.be.greaterThan(8);
    const offences = files.flatMap((file) => htmlSinks(file, readFileSync(file, "utf8")).map((sink) => `${path.relative(WEB_SRC, file)}:${sink}`));
    expect(offences).to.deep.equal([]);
  });

  it("a plain-text grep agrees (innerHTML / insertAdjacentHTML appear nowhere outside comments)", () => {
    for (const file of sources(WEB_SRC)) {
      const code = readFileSync(file, "utf8")
        .replace(/\/\*[\s\S]*?\*\//g, "")
        .replace(/(^|[^:])\/\/.*$/gm, "$1");
      expect(code, path.relative(WEB_SRC, file)).to.not.match(/innerHTML|outerHTML|insertAdjacentHTML|document\.write/);
    }
  });

  it("the check itself catches each kind of sink, and not mere words in comments", () => {
    const text = [
      "node.innerHTML = text;",
      'node["outerHTML"] = text;',
      'node.insertAdjacentHTML("beforeend", text);',
      "document.write(text);",
      "new DOMParser();",
      'frame.setAttribute("srcdoc", text);',
      'button.setAttribute("onclick", text);',
      "// innerHTML and insertAdjacentHTML in a comment are fine",
      "node.textContent = text;",
    ].join("\n");
    expect(htmlSinks("probe.ts", text)).to.deep.equal([
      "1: innerHTML",
      "2: outerHTML",
      "3: insertAdjacentHTML",
      "4: write",
      "5: new DOMParser",
      '6: setAttribute("srcdoc")',
      '7: setAttribute("onclick")',
    ]);
  });
});
