// Parses an AsyncAPI document with the official parser (@asyncapi/parser) and prints its
// diagnostics as one JSON object: {"valid": bool, "errors": [...], "warnings": [...]}.
// Exit code 0 when the document is valid (no diagnostic of severity "error"), 1 otherwise.
//
//   node tools/asyncapi/validate.mjs asyncapi.json
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const path = process.argv[2];
if (!path) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}
const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(path, "utf8"));
const describe = (d) => ({ code: d.code, message: d.message, path: d.path.join(".") });
const errors = diagnostics.filter((d) => d.severity === 0).map(describe);
const warnings = diagnostics.filter((d) => d.severity === 1).map(describe);
const valid = document !== undefined && errors.length === 0;
console.log(JSON.stringify({ valid, errors, warnings }));
process.exit(valid ? 0 : 1);
