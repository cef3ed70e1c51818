// The router actor's protocol on one rank. It owns the routing of every MoE layer: the moe-layer machines ask it to
// route a microbatch's tokens and, in backward, to take the gate gradients back through the router; once per step
// the optimizer pre-hook asks it for the auxiliary-loss-free expert-bias update (torchtitan-semantics.md §3.4:
// all_reduce of the token counts over the loss group, then the same bias move on every rank). Requests are events
// naming a handle (the layer × microbatch step record the expert shard keeps in its pool); each is answered with an
// emitted event naming the same handle and, when the request names a `replyTo` actor (the train step asking for the
// bias update), sent to it as well — so the machine also runs alone, without a parent (tests).

import { assign, enqueueActions, fromPromise, setup, type AnyActorRef } from 'xstate';
import { errorText, notProvided } from './state-meta.ts';

export interface RouterInput {
  step: number;
}

export interface RouterContext extends RouterInput {
  error: string | null;
  /** Who asked the request being served (answers are sent to it as well as emitted). */
  replyTo: AnyActorRef | null;
}

/** A layer × microbatch step record of the expert shard (its buffers are pooled; the handle names them). */
export interface MoeHandle {
  layer: number;
  microbatch: number;
}

export type RouterEvent =
  | { type: 'ROUTE'; handle: MoeHandle; replyTo?: AnyActorRef }
  | { type: 'ROUTER_GRAD'; handle: MoeHandle; replyTo?: AnyActorRef }
  | { type: 'BIAS_UPDATE'; replyTo?: AnyActorRef };

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
    failed: enqueueActions(({ context, enqueue }) => {
      const e = { type: 'ROUTER_FAILED' as const, error: context.error ?? 'router failed' };
      enqueue.emit(e);
      if (context.replyTo) enqueue.sendTo(context.replyTo, e);
    }),
    answer: enqueueActions(({ context, enqueue }, e: RouterEmitted) => {
      enqueue.emit(e);
      if (context.replyTo) enqueue.sendTo(context.replyTo, e);
    }),
    remember: assign({ replyTo: ({ event }) => event.replyTo ?? null }),
  },
}).createMachine({
  id: 'router',
  context: ({ input }) => ({ ...input, error: null, replyTo: null }),
  initial: 'idle',
  states: {
    idle: {
      on: {
        ROUTE: { target: 'routing', actions: 'remember' },
        ROUTER_GRAD: { target: 'routerGrad', actions: 'remember' },
        BIAS_UPDATE: { target: 'biasUpdate', actions: 'remember' },
      },
    },
    routing: {
      invoke: {
        id: 'route',
        src: 'route',
        input: ({ context, event }) => ({
          step: context.step,
          handle: (event as { handle: MoeHandle }).handle,
          state: 'routing' as const,
        }),
        onDone: {
          target: 'idle',
          actions: { type: 'answer', params: ({ event }) => ({ type: 'ROUTED' as const, handle: handleOf(event) }) },
        },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    routerGrad: {
      invoke: {
        id: 'routerGrad',
        src: 'routerGrad',
        input: ({ context, event }) => ({
          step: context.step,
          handle: (event as { handle: MoeHandle }).handle,
          state: 'routerGrad' as const,
        }),
        onDone: {
          target: 'idle',
          actions: {
            type: 'answer',
            params: ({ event }) => ({ type: 'ROUTER_GRAD_DONE' as const, handle: handleOf(event) }),
          },
        },
        onError: { target: 'failed', actions: ['recordError', 'failed'] },
      },
    },
    biasUpdate: {
      invoke: {
        id: 'biasUpdate',
        src: 'biasUpdate',
        input: ({ context }) => ({ step: context.step, handle: null, state: 'biasUpdate' as const }),
        onDone: { target: 'idle', actions: { type: 'answer', params: { type: 'BIAS_UPDATED' as const } } },
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
