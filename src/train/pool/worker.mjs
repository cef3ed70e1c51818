// Worker entry of the side pool (piscina). Node 20 cannot start a worker on a .ts file, so this file registers
// tsx's ESM loader for the thread and re-exports the TypeScript task dispatcher (piscina calls the default export).
import { register } from 'tsx/esm/api';

register();
const tasks = await import('./tasks.ts');
export default tasks.default;
