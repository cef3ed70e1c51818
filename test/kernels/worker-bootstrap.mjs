// Worker entry for TypeScript workers on Node 20: `--import tsx` in execArgv does not work for workers, so the
// worker registers tsx's ESM loader itself and then imports the .ts module named in workerData.__entry.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.__entry);
