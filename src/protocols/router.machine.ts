// The router actor's protocol on one rank. It owns the routing of every MoE layer: the moe-layer machines ask it to
// route a microbatch's tokens and, in backward, to take the gate gradients back through the router; once per step
// the train step asks it for the auxiliary-loss-free expert-bias update (the optimizer pre-hook,
// torchtitan-semantics.md §3.4: all_reduce of the token counts over the loss group, then the same bias move on
// every rank). Requests are events naming a handle (the layer × microbatch step record the expert shard keeps in
// its pool) and the `replyTo` actor that asked; several may be in flight at once (MoE layers × microbatches), so
// they wait in a queue and are served one at a time, in arrival order, each answered to its own `replyTo`. A failed
// request fails the router: every request still queued is answered with the failure too, so no asker waits on.

import { assign, enqueueActions, fromPromise, setup, type ActorRef, type AnyActorRef } from 'xstate';
import { errorText, notProvided } from './state-meta.ts';

export interface RouterInput {
  step: number;
}

/** A layer × microbatch step record of the expert shard (its buffers are pooled; the handle names them). */
export interface MoeHandle {
  layer: number;
  microbatch: number;
}

export type RouterEvent =
  | { type: 'ROUTE'; handle: MoeHandle; replyTo: AnyActorRef }
  | { type: 'ROUTER_GRAD'; handle: MoeHandle; replyTo: AnyActorRef }
  | { type: 'BIAS_UPDATE'; replyTo: AnyActorRef };

/** The answers, each sent to the `replyTo` of the request it answers. */
export type RouterAnswer =
  | { type: 'ROUTED'; handle: MoeHandle }
  | { type: 'ROUTER_GRAD_DONE'; handle: MoeHandle }
  | { type: 'BIAS_UPDATED' }
  | { type: 'ROUTER_FAILED'; error: string };

/** An actor that asks the router (it accepts the answers). */
export type RouterAsker = ActorRef<never, RouterAnswer>;

export interface RouterContext extends RouterInput {
  error: string | null;
  /** Requests not yet answered; the head is the one being served. */
  queue: RouterEvent[];
}

export interface RouterStageInput {
  step: number;
  handle: MoeHandle | null;
  state: 'routing' | 'routerGrad' | 'biasUpdate';
}

const stage = fromPromise<void, RouterStageInput>(notProvided('router stage'));

const head = (context: RouterContext): RouterEvent => context.queue[0]!;
const stageInput =
  (state: RouterStageInput['state']) =>
  ({ context }: { context: RouterContext }): RouterStageInput => {
    const r = head(context);
    return { step: context.step, handle: 'handle' in r ? r.handle : null, state };
  };
const onError = { target: '#router.failed', actions: 'recordError' } as const;

export const routerMachine = setup({
  types: {
    context: {} as RouterContext,
    input: {} as RouterInput,
    events: {} as RouterEvent,
  },
  actors: { route: stage, routerGrad: stage, biasUpdate: stage },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    enqueue: assign({ queue: ({ context, event }) => [...context.queue, event] }),
    /** Answers the head of the queue to its asker and takes it off. */
    answer: enqueueActions(({ context, enqueue }) => {
      const r = head(context);
      const a: RouterAnswer =
        r.type === 'ROUTE'
          ? { type: 'ROUTED', handle: r.handle }
          : r.type === 'ROUTER_GRAD'
            ? { type: 'ROUTER_GRAD_DONE', handle: r.handle }
            : { type: 'BIAS_UPDATED' };
      enqueue.sendTo(r.replyTo, a);
      enqueue.assign({ queue: context.queue.slice(1) });
    }),
    /** The failed request and every queued one are answered with the failure. */
    failAll: enqueueActions(({ context, enqueue }) => {
      const e: RouterAnswer = { type: 'ROUTER_FAILED', error: context.error ?? 'router failed' };
      for (const r of context.queue) enqueue.sendTo(r.replyTo, e);
      enqueue.assign({ queue: [] });
    }),
  },
  guards: {
    nextIs: ({ context }, type: RouterEvent['type']) => context.queue[0]?.type === type,
  },
}).createMachine({
  id: 'router',
  context: ({ input }) => ({ ...input, error: null, queue: [] }),
  initial: 'serving',
  states: {
    serving: {
      // Accepted in every serving state: a request that arrives while another is served waits its turn.
      on: { ROUTE: { actions: 'enqueue' }, ROUTER_GRAD: { actions: 'enqueue' }, BIAS_UPDATE: { actions: 'enqueue' } },
      initial: 'idle',
      states: {
        idle: {
          always: [
            { guard: { type: 'nextIs', params: 'ROUTE' }, target: 'routing' },
            { guard: { type: 'nextIs', params: 'ROUTER_GRAD' }, target: 'routerGrad' },
            { guard: { type: 'nextIs', params: 'BIAS_UPDATE' }, target: 'biasUpdate' },
          ],
        },
        routing: {
          invoke: {
            id: 'route',
            src: 'route',
            input: stageInput('routing'),
            onDone: { target: 'idle', actions: 'answer' },
            onError,
          },
        },
        routerGrad: {
          invoke: {
            id: 'routerGrad',
            src: 'routerGrad',
            input: stageInput('routerGrad'),
            onDone: { target: 'idle', actions: 'answer' },
            onError,
          },
        },
        biasUpdate: {
          invoke: {
            id: 'biasUpdate',
            src: 'biasUpdate',
            input: stageInput('biasUpdate'),
            onDone: { target: 'idle', actions: 'answer' },
            onError,
          },
        },
      },
    },
    failed: { type: 'final', entry: 'failAll' },
  },
});

export type RouterMachine = typeof routerMachine;
