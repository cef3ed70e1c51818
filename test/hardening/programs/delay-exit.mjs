// A process that launches 4 inproc ranks with a 20 s delay fault and a 0.3 s collective timeout, prints how the
// launch ended and returns: the process must exit right after (no delay timer left to keep it alive).
import { register } from 'tsx/esm/api';
register();
const { launch } = await import('../../../src/comm/launch.ts');
const t0 = performance.now();
const res = await launch(
  { transport: 'inproc', size: 4, timeoutMs: 300, seed: 1, faults: [{ kind: 'delay', rank: 1, ms: 20_000, atSeq: 2 }] },
  { module: new URL('../../comm/programs/scenarios.ts', import.meta.url).pathname },
  { scenario: 'steps', steps: 3 },
);
console.log(
  `launch ended in ${Math.round(performance.now() - t0)} ms; failed ranks ${res.outcomes.filter((o) => !o.ok).length}`,
);
