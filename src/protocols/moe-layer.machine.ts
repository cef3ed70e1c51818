// The MoE layer protocol of one layer and one microbatch on one rank:
//   forward:  route → exchangeCounts → dispatch → compute → combine
//   backward: combineGrad → computeGrad → dispatchGrad → routerGrad   (the duals, in reverse)
// The dispatch strategy is data (strategies.ts): the states are the same for a2a, allgather-padded and
// allgather-rs; only the collectives the invoked stage actors issue differ. With EP = 1 (strategy 'local')
// exchangeCounts is skipped and no stage communicates.
//
// Pure: the stages are invoked actors whose implementations the actors layer provides (tensors, collectives).
// Routing is the router actor's (systemId `router`): `route` and `routerGrad` send it a request with `replyTo: self`
// and move on its answer (ROUTED / ROUTER_GRAD_DONE; ROUTER_FAILED fails the layer).
// Under activation checkpointing the forward runs a second time before backward (FORWARD with pass 'recompute');
// the layer's saved context from the first pass has been dropped by then (DROP).
//
// The layer's buffers belong to the machine: whatever it still holds is released by the root's exit action, which
// runs whenever the machine reaches a final state — `done` after backward, `failed` after a stage error, and
// `aborted` on ABORT (a failed step: XState runs no exit actions when an actor is merely stopped, so the step
// aborts its layers by event before it stops them).

import { assign, enqueueActions, fromPromise, setup, type AnyActorRef } from 'xstate';
import type { RouterAnswer, RouterEvent } from './router.machine.ts';
import type { MoeStrategy } from './strategies.ts';
import { errorText, notProvided, type StateMeta } from './state-meta.ts';

export type MoePass = 'forward' | 'recompute';

export interface MoeLayerInput {
  layer: number;
  microbatch: number;
  step: number;
  strategy: MoeStrategy;
}

export interface MoeLayerContext extends MoeLayerInput {
  pass: MoePass;
  error: string | null;
  /** Who asked for the running pass: its answer (or the failure) goes there. */
  replyTo: AnyActorRef | null;
}

/** The answers a layer sends to its FORWARD / BACKWARD asker. */
export const MOE_ANSWERS = ['FORWARD_DONE', 'BACKWARD_DONE', 'MOE_FAILED'] as const;

/** The layer's answers to the FORWARD / BACKWARD asker (a failed or aborted layer answers MOE_FAILED). */
export type MoeAnswer =
  | { type: 'FORWARD_DONE'; layer: number; microbatch: number }
  | { type: 'BACKWARD_DONE'; layer: number; microbatch: number }
  | { type: 'MOE_FAILED'; layer: number; microbatch: number; error: string };

/** What every stage actor receives. */
export interface MoeStageInput {
  layer: number;
  microbatch: number;
  step: number;
  strategy: MoeStrategy;
  pass: MoePass;
  /** The state whose effect the stage is (collectives name it as their call site). */
  state: MoeStage;
}

export type MoeLayerEvent =
  | { type: 'FORWARD'; pass: MoePass; replyTo: AnyActorRef }
  | { type: 'BACKWARD'; replyTo: AnyActorRef }
  | { type: 'DROP' }
  | { type: 'ABORT' }
  | RouterAnswer;

/** The layer's invoked stages (route and routerGrad are requests to the router, not stages). */
export const MOE_STAGES = [
  'exchangeCounts',
  'dispatch',
  'compute',
  'combine',
  'combineGrad',
  'computeGrad',
  'dispatchGrad',
] as const;
export type MoeStage = (typeof MOE_STAGES)[number];

const routerRequest = (type: 'ROUTE' | 'ROUTER_GRAD', context: MoeLayerContext, self: AnyActorRef): RouterEvent => ({
  type,
  handle: { layer: context.layer, microbatch: context.microbatch },
  replyTo: self,
});
const NO_ROUTER = {
  type: 'ROUTER_FAILED',
  error: 'moe layer: no router actor (systemId "router") in the system',
} as const;

/** The answer of a layer in `type` to its asker. */
const answerOf = (type: MoeAnswer['type'], c: MoeLayerContext): MoeAnswer =>
  type === 'MOE_FAILED'
    ? { type, layer: c.layer, microbatch: c.microbatch, error: c.error ?? 'moe layer aborted (the step failed)' }
    : { type, layer: c.layer, microbatch: c.microbatch };

const stage = fromPromise<void, MoeStageInput>(notProvided('moe-layer stage'));

const stageInput =
  (state: MoeStage) =>
  ({ context }: { context: MoeLayerContext }): MoeStageInput => ({
    layer: context.layer,
    microbatch: context.microbatch,
    step: context.step,
    strategy: context.strategy,
    pass: context.pass,
    state,
  });

const onError = { target: '#moeLayer.failed', actions: 'recordError' } as const;

const meta = (m: StateMeta) => m;

export const moeLayerMachine = setup({
  types: {
    context: {} as MoeLayerContext,
    input: {} as MoeLayerInput,
    events: {} as MoeLayerEvent,
  },
  actors: {
    route: stage,
    exchangeCounts: stage,
    dispatch: stage,
    compute: stage,
    combine: stage,
    combineGrad: stage,
    computeGrad: stage,
    dispatchGrad: stage,
  },
  actions: {
    takeForward: assign(({ event }) => (event.type === 'FORWARD' ? { pass: event.pass, replyTo: event.replyTo } : {})),
    takeBackward: assign(({ event }) => (event.type === 'BACKWARD' ? { replyTo: event.replyTo } : {})),
    recordError: assign({ error: ({ event }) => errorText(event) }),
    // The router requests of the `route` / `routerGrad` states (no router in the system fails the layer).
    askRoute: enqueueActions(({ context, self, system, enqueue }) => {
      const router = system.get('router');
      if (router) enqueue.sendTo(router, routerRequest('ROUTE', context, self));
      else enqueue.raise(NO_ROUTER);
    }),
    askRouterGrad: enqueueActions(({ context, self, system, enqueue }) => {
      const router = system.get('router');
      if (router) enqueue.sendTo(router, routerRequest('ROUTER_GRAD', context, self));
      else enqueue.raise(NO_ROUTER);
    }),
    // The layer's buffers are released by the states that end their use: what the forward kept when the block is
    // checkpointed (DROP, before the recompute), everything still held when the machine ends (root exit).
    dropForward: () => {},
    releaseLayer: () => {},
    // The answers to the asker of the running pass, once: an answered asker no longer waits (an ABORT between
    // passes answers nobody).
    answerForward: enqueueActions(({ context, enqueue }) => {
      if (context.replyTo) enqueue.sendTo(context.replyTo, answerOf('FORWARD_DONE', context));
      enqueue.assign({ replyTo: null });
    }),
    answerBackward: enqueueActions(({ context, enqueue }) => {
      if (context.replyTo) enqueue.sendTo(context.replyTo, answerOf('BACKWARD_DONE', context));
      enqueue.assign({ replyTo: null });
    }),
    answerFailed: enqueueActions(({ context, enqueue }) => {
      if (context.replyTo) enqueue.sendTo(context.replyTo, answerOf('MOE_FAILED', context));
      enqueue.assign({ replyTo: null });
    }),
  },
  guards: {
    isLocal: ({ context }) => context.strategy === 'local',
  },
}).createMachine({
  id: 'moeLayer',
  context: ({ input }) => ({ ...input, pass: 'forward', error: null, replyTo: null }),
  initial: 'idle',
  exit: 'releaseLayer',
  on: { ABORT: '.aborted' },
  states: {
    idle: {
      on: { FORWARD: { target: 'forward', actions: 'takeForward' } },
    },
    forward: {
      initial: 'route',
      states: {
        route: {
          meta: meta({ actor: 'router', category: 'compute' }),
          entry: 'askRoute',
          on: {
            ROUTED: [{ guard: 'isLocal', target: 'dispatch' }, { target: 'exchangeCounts' }],
            ROUTER_FAILED: onError,
          },
        },
        exchangeCounts: {
          meta: meta({ actor: 'expert', category: 'dispatch' }),
          invoke: {
            id: 'exchangeCounts',
            src: 'exchangeCounts',
            input: stageInput('exchangeCounts'),
            onDone: 'dispatch',
            onError,
          },
        },
        dispatch: {
          meta: meta({ actor: 'expert', category: 'dispatch' }),
          invoke: { id: 'dispatch', src: 'dispatch', input: stageInput('dispatch'), onDone: 'compute', onError },
        },
        compute: {
          meta: meta({ actor: 'expert', category: 'compute' }),
          invoke: { id: 'compute', src: 'compute', input: stageInput('compute'), onDone: 'combine', onError },
        },
        combine: {
          meta: meta({ actor: 'expert', category: 'combine' }),
          invoke: {
            id: 'combine',
            src: 'combine',
            input: stageInput('combine'),
            onDone: '#moeLayer.forwardDone',
            onError,
          },
        },
      },
    },
    forwardDone: {
      entry: 'answerForward',
      on: {
        // Activation checkpointing: the whole forward again, with the same collectives, before backward.
        FORWARD: { target: 'forward', actions: 'takeForward' },
        BACKWARD: { target: 'backward', actions: 'takeBackward' },
        DROP: { actions: 'dropForward' },
      },
    },
    backward: {
      initial: 'combineGrad',
      states: {
        combineGrad: {
          meta: meta({ actor: 'expert', category: 'combine' }),
          invoke: {
            id: 'combineGrad',
            src: 'combineGrad',
            input: stageInput('combineGrad'),
            onDone: 'computeGrad',
            onError,
          },
        },
        computeGrad: {
          meta: meta({ actor: 'expert', category: 'compute' }),
          invoke: {
            id: 'computeGrad',
            src: 'computeGrad',
            input: stageInput('computeGrad'),
            onDone: 'dispatchGrad',
            onError,
          },
        },
        dispatchGrad: {
          meta: meta({ actor: 'expert', category: 'dispatch' }),
          invoke: {
            id: 'dispatchGrad',
            src: 'dispatchGrad',
            input: stageInput('dispatchGrad'),
            onDone: 'routerGrad',
            onError,
          },
        },
        routerGrad: {
          meta: meta({ actor: 'router', category: 'compute' }),
          entry: 'askRouterGrad',
          on: { ROUTER_GRAD_DONE: '#moeLayer.done', ROUTER_FAILED: onError },
        },
      },
    },
    done: { type: 'final', entry: 'answerBackward' },
    failed: { type: 'final', entry: 'answerFailed' },
    /** A failed step: the layer ends where it is (its buffers go with the root's exit); its asker is answered. */
    aborted: { type: 'final', entry: 'answerFailed' },
  },
});

export type MoeLayerMachine = typeof moeLayerMachine;
