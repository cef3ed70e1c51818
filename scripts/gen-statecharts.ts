// Writes docs/statecharts.md: the Mermaid diagrams of the protocol machines (src/protocols/*.machine.ts), drawn
// from the machine definitions by src/cli/machines.ts, so the document stays true to the code.
//   node --import tsx scripts/gen-statecharts.ts          write the file
//   node --import tsx scripts/gen-statecharts.ts --check  exit 1 if the committed file is out of date
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { statechartsMarkdown } from '../src/cli/machines.ts';

const target = fileURLToPath(new URL('../docs/statecharts.md', import.meta.url));
const text = statechartsMarkdown();
if (process.argv.includes('--check')) {
  const current = existsSync(target) ? readFileSync(target, 'utf8') : null;
  if (current !== text) {
    console.error(
      `${target} is out of date with src/protocols/*.machine.ts; run: node --import tsx scripts/gen-statecharts.ts`,
    );
    process.exit(1);
  }
  console.log(`${target} is up to date`);
} else {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}
