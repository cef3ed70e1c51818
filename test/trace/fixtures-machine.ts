// A small machine with every construct the statechart export must draw: nesting two deep, a parallel state,
// guards (named and inline), invoke done/error, a delayed transition, an eventless one, final states, and a
// transition from deep inside a compound to a state outside it.
import { fromPromise, setup } from 'xstate';

export const demoMachine = setup({
  types: { events: {} as { type: 'GO' } | { type: 'STOP' } | { type: 'RETRY' } },
  actors: { work: fromPromise(async () => 1) },
  guards: { canRetry: () => true },
}).createMachine({
  id: 'demo',
  initial: 'idle',
  states: {
    idle: { on: { GO: 'running' } },
    running: {
      initial: 'prepare',
      on: { STOP: '#demo.stopped' },
      states: {
        prepare: { after: { 50: 'work' } },
        work: {
          invoke: { src: 'work', onDone: 'check', onError: '#demo.failed' },
        },
        check: {
          always: [{ guard: ({ context }) => context === undefined, target: 'done' }, { target: 'done' }],
        },
        done: { type: 'final' },
      },
      onDone: 'monitoring',
    },
    monitoring: {
      type: 'parallel',
      states: {
        left: { initial: 'a', states: { a: { on: { GO: 'b' } }, b: {} } },
        right: { initial: 'x', states: { x: {} } },
      },
      on: { STOP: 'stopped' },
    },
    failed: { on: { RETRY: { guard: 'canRetry', target: 'running' } } },
    stopped: { type: 'final' },
  },
});
