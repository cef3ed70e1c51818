#!/usr/bin/env node
// `npm run bench:<name>`: runs scripts/bench/<name>.ts with tsx.
import './v8-heap.mjs';
import { register } from 'tsx/esm/api';
register();
const name = process.argv[2];
if (!name) {
  console.error('usage: npm run bench:<kernels|model|model-profile|comm|ep|seed|trace|checkpoint|data>');
  process.exit(2);
}
const { run } = await import(`../scripts/bench/${name}.ts`);
await run(process.argv.slice(3));
