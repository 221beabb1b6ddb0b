// The team's own test runner: every exported function of tests/*.test.mjs is a case. It prints one
// coloured "PASS name" or "FAIL name" line per case (the store reads them with the recipe's pass/fail
// patterns) and exits 1 when any failed.
import { readdirSync } from "node:fs";
import { pathToFileURL } from "node:url";

const green = (text) => `\x1b[32m${text}\x1b[0m`;
const red = (text) => `\x1b[1;31m${text}\x1b[0m`;
let failed = 0;
let total = 0;
const folder = new URL(".", import.meta.url);
for (const file of readdirSync(folder).filter((name) => name.endsWith(".test.mjs")).sort()) {
  const cases = await import(pathToFileURL(new URL(file, folder).pathname));
  for (const [name, run] of Object.entries(cases)) {
    total += 1;
    try {
      await run();
      console.log(`${green("PASS")} ${file.replace(".test.mjs", "")} › ${name}`);
    } catch (error) {
      failed += 1;
      console.log(`${red("FAIL")} ${file.replace(".test.mjs", "")} › ${name}`);
      console.log(`     ${error.message}`);
    }
  }
}
console.log(`\n${total - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
