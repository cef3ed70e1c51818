// Worker entry of the threads transport. Node 20 cannot start a worker on a .ts file even with
// execArgv ['--import', 'tsx'] ("Unknown file extension .ts"), so the worker starts here, registers tsx's ESM
// loader for this thread, and then imports the TypeScript worker program named in workerData.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.__entry);
