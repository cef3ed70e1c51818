// The router actor's protocol on one rank. It owns the routing of every MoE layer: the moe-layer machines ask it to
// route a microbatch's tokens and, in backward, to take the gate gradients back through the router; once per step
// the optimizer pre-hook asks it for the auxiliary-loss-free expert-bias update (torchtitan-semantics.md §3.4:
// all_reduce of the token counts over the loss group, then the same bias move on every rank). Requests are events
// naming a handle (the layer × microbatch step record the expert shard keeps in its pool); each is answered with an
// emitted event naming the same handle.

import { assign, emit, fromPromise, setup } from 'xstate';
import { errorText, notProvided } from './state-meta.ts';

export interface RouterInput {
  step: number;
}

export interface RouterContext extends RouterInput {
  error: string | null;
}

/** A layer × microbatch step record of the expert shard (its buffers are pooled; the handle names them). */
export interface MoeHandle {
  layer: number;
  microbatch: number;
}

export type RouterEvent =
  | { type: 'ROUTE'; handle: MoeHandle }
  | { type: 'ROUTER_GRAD'; handle: MoeHandle }
  | { type: 'BIAS_UPDATE' };

export type RouterEmitted =
  | { type: 'ROUTED'; handle: MoeHandle }
  | { type: 'ROUTER_GRAD_DONE'; handle: MoeHandle }
  | { type: 'BIAS_UPDATED' }
  | { type: 'ROUTER_FAILED'; error: string };

export interface RouterStageInput {
  step: number;
  handle: MoeHandle | null;
  state: 'routing' | 'routerGrad' | 'biasUpdate';
}

/** Resolves with the handle it was given (the done event names the request it answers). */
const stage = fromPromise<MoeHandle | null, RouterStageInput>(notProvided('router stage'));

export const routerMachine = setup({
  types: {
    context: {} as RouterContext,
    input: {} as RouterInput,
    events: {} as RouterEvent,
    emitted: {} as RouterEmitted,
  },
  actors: { route: stage, routerGrad: stage, biasUpdate: stage },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    failed: emit(({ context }) => ({ type: 'ROUTER_FAILED' as const, error: context.error ?? 'router failed' })),
  },
}).createMachine({
  id: 'router',
  context: ({ input }) => ({ ...input, error: null }),
  initial: 'idle',
  states: {
    idle: {
      on: {
        ROUTE: 'routing',
        ROUTER_GRAD: 'routerGrad',
        BIAS_UPDATE: 'biasUpdate',
      },
    },
    routing: {
      invoke: {
        id: 'route',
        src: 'route',
        input: ({ context, event }) => ({ step: context.step, handle: (event as { handle: MoeHandle }).handle, state: 'routing' as const }),
        onDone: { target: 'idle', actions: emit(({ event }) => ({ type: 'ROUTED' as const, handle: handleOf(event) })) },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    routerGrad: {
      invoke: {
        id: 'routerGrad',
        src: 'routerGrad',
        input: ({ context, event }) => ({ step: context.step, handle: (event as { handle: MoeHandle }).handle, state: 'routerGrad' as const }),
        onDone: { target: 'idle', actions: emit(({ event }) => ({ type: 'ROUTER_GRAD_DONE' as const, handle: handleOf(event) })) },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    biasUpdate: {
      invoke: {
        id: 'biasUpdate',
        src: 'biasUpdate',
        input: ({ context }) => ({ step: context.step, handle: null, state: 'biasUpdate' as const }),
        onDone: { target: 'idle', actions: emit({ type: 'BIAS_UPDATED' as const }) },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    failed: { type: 'final' },
  },
});

/** The done event of a stage carries the handle it was given back as its output. */
function handleOf(event: unknown): MoeHandle {
  return (event as { output: MoeHandle }).output;
}

export type RouterMachine = typeof routerMachine;
