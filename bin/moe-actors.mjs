#!/usr/bin/env node
// CLI entry: registers tsx (we ship TypeScript sources, no build step) and hands over to src/cli/main.ts.
import './v8-heap.mjs';
import { register } from 'tsx/esm/api';
register();
const { main } = await import('../src/cli/main.ts');
await main(process.argv.slice(2));
