// The optimizer actor's protocol on one rank: zero the gradient shards before a step's first backward, then —
// once every reduction is in — clip by the global norm (an all_reduce over the FSDP group), wait for the
// expert-bias update (the optimizer pre-hook, done by the router), and step AdamW with the step's learning rate.
// Requests are events; each is answered with an emitted event (CLIPPED carries the pre-clip norm).

import { assign, emit, fromPromise, setup } from 'xstate';
import { errorText, notProvided } from './state-meta.ts';

export interface OptimizerInput {
  step: number;
}

export interface OptimizerContext extends OptimizerInput {
  gradNorm: number | null;
  error: string | null;
}

export type OptimizerEvent = { type: 'ZERO_GRAD' } | { type: 'CLIP'; maxNorm: number } | { type: 'STEP'; lr: number };

export type OptimizerEmitted =
  | { type: 'GRADS_ZEROED' }
  | { type: 'CLIPPED'; gradNorm: number }
  | { type: 'STEPPED' }
  | { type: 'OPTIMIZER_FAILED'; error: string };

export interface OptimizerStageInput {
  step: number;
  state: 'zeroing' | 'clipping' | 'stepping';
  maxNorm?: number;
  lr?: number;
}

export const optimizerMachine = setup({
  types: {
    context: {} as OptimizerContext,
    input: {} as OptimizerInput,
    events: {} as OptimizerEvent,
    emitted: {} as OptimizerEmitted,
  },
  actors: {
    zeroGrad: fromPromise<void, OptimizerStageInput>(notProvided('optimizer stage')),
    clip: fromPromise<number, OptimizerStageInput>(notProvided('optimizer stage')),
    step: fromPromise<void, OptimizerStageInput>(notProvided('optimizer stage')),
  },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    failed: emit(({ context }) => ({ type: 'OPTIMIZER_FAILED' as const, error: context.error ?? 'optimizer failed' })),
  },
}).createMachine({
  id: 'optimizer',
  context: ({ input }) => ({ ...input, gradNorm: null, error: null }),
  initial: 'idle',
  states: {
    idle: {
      on: { ZERO_GRAD: 'zeroing', CLIP: 'clipping' },
    },
    zeroing: {
      invoke: {
        id: 'zeroGrad',
        src: 'zeroGrad',
        input: ({ context }) => ({ step: context.step, state: 'zeroing' as const }),
        onDone: { target: 'idle', actions: emit({ type: 'GRADS_ZEROED' as const }) },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    clipping: {
      invoke: {
        id: 'clip',
        src: 'clip',
        input: ({ context, event }) => ({ step: context.step, state: 'clipping' as const, maxNorm: (event as { maxNorm: number }).maxNorm }),
        onDone: {
          target: 'clipped',
          actions: [assign({ gradNorm: ({ event }) => event.output }), emit(({ event }) => ({ type: 'CLIPPED' as const, gradNorm: event.output }))],
        },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    clipped: {
      on: { STEP: 'stepping' },
    },
    stepping: {
      invoke: {
        id: 'step',
        src: 'step',
        input: ({ context, event }) => ({ step: context.step, state: 'stepping' as const, lr: (event as { lr: number }).lr }),
        onDone: { target: 'stepped', actions: emit({ type: 'STEPPED' as const }) },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    stepped: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type OptimizerMachine = typeof optimizerMachine;
