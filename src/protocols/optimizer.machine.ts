// The optimizer actor's protocol on one rank: zero the gradient shards before a step's first backward, then —
// once every reduction is in — clip by the global norm (an all_reduce over the FSDP group), wait for the
// expert-bias update (the optimizer pre-hook, done by the router), and step AdamW with the step's learning rate.
// Requests are events; each is answered with an emitted event (CLIPPED carries the pre-clip norm) and, when the
// request names a `replyTo` actor (the train step), with the same event sent to it — so the machine also runs alone,
// without a parent (tests), where XState's sendParent would throw.

import { assign, enqueueActions, fromPromise, setup, type AnyActorRef } from 'xstate';
import { errorText, notProvided } from './state-meta.ts';

export interface OptimizerInput {
  step: number;
}

export interface OptimizerContext extends OptimizerInput {
  gradNorm: number | null;
  error: string | null;
  /** Who asked the request being served (answers are sent to it as well as emitted). */
  replyTo: AnyActorRef | null;
}

export type OptimizerEvent =
  | { type: 'ZERO_GRAD'; replyTo?: AnyActorRef }
  | { type: 'CLIP'; maxNorm: number; replyTo?: AnyActorRef }
  | { type: 'STEP'; lr: number; replyTo?: AnyActorRef };

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
    failed: enqueueActions(({ context, enqueue }) => {
      const e = { type: 'OPTIMIZER_FAILED' as const, error: context.error ?? 'optimizer failed' };
      enqueue.emit(e);
      if (context.replyTo) enqueue.sendTo(context.replyTo, e);
    }),
    answer: enqueueActions(({ context, enqueue }, e: OptimizerEmitted) => {
      enqueue.emit(e);
      if (context.replyTo) enqueue.sendTo(context.replyTo, e);
    }),
    remember: assign({ replyTo: ({ event }) => event.replyTo ?? null }),
  },
}).createMachine({
  id: 'optimizer',
  context: ({ input }) => ({ ...input, gradNorm: null, error: null, replyTo: null }),
  initial: 'idle',
  states: {
    idle: {
      on: { ZERO_GRAD: { target: 'zeroing', actions: 'remember' }, CLIP: { target: 'clipping', actions: 'remember' } },
    },
    zeroing: {
      invoke: {
        id: 'zeroGrad',
        src: 'zeroGrad',
        input: ({ context }) => ({ step: context.step, state: 'zeroing' as const }),
        onDone: { target: 'idle', actions: { type: 'answer', params: { type: 'GRADS_ZEROED' as const } } },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    clipping: {
      invoke: {
        id: 'clip',
        src: 'clip',
        input: ({ context, event }) => ({
          step: context.step,
          state: 'clipping' as const,
          maxNorm: (event as { maxNorm: number }).maxNorm,
        }),
        onDone: {
          target: 'clipped',
          actions: [
            assign({ gradNorm: ({ event }) => event.output }),
            { type: 'answer', params: ({ event }) => ({ type: 'CLIPPED' as const, gradNorm: event.output }) },
          ],
        },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    clipped: {
      on: { STEP: { target: 'stepping', actions: 'remember' } },
    },
    stepping: {
      invoke: {
        id: 'step',
        src: 'step',
        input: ({ context, event }) => ({
          step: context.step,
          state: 'stepping' as const,
          lr: (event as { lr: number }).lr,
        }),
        onDone: { target: 'stepped', actions: { type: 'answer', params: { type: 'STEPPED' as const } } },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    stepped: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type OptimizerMachine = typeof optimizerMachine;
