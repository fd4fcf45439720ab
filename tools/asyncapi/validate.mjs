// Parse and validate an AsyncAPI document with the official parser (@asyncapi/parser), then
// print, as JSON on stdout, its diagnostics and every message example (for the tests to check
// against the JSON Schemas). Exit status 1 when the parser reports an error.
//
//   node tools/asyncapi/validate.mjs docs/asyncapi.yaml
import { Parser, fromFile } from '@asyncapi/parser';

const path = process.argv[2];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const report = {
  errors: diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join('/')}: ${d.message}`),
  warnings: diagnostics.filter((d) => d.severity === 1).map((d) => `${d.path.join('/')}: ${d.message}`),
  examples: [],
};
if (document) {
  for (const message of document.allMessages()) {
    for (const example of message.examples()) {
      report.examples.push({ message: message.id(), name: example.name() ?? null, payload: example.payload() });
    }
  }
}
process.stdout.write(JSON.stringify(report, null, 1) + '\n');
process.exit(report.errors.length ? 1 : 0);
