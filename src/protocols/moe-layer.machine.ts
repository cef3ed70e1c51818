// The MoE layer protocol of one layer and one microbatch on one rank:
//   forward:  route → exchangeCounts → dispatch → compute → combine
//   backward: combineGrad → computeGrad → dispatchGrad → routerGrad   (the duals, in reverse)
// The dispatch strategy is data (strategies.ts): the states are the same for a2a, allgather-padded and
// allgather-rs; only the collectives the invoked stage actors issue differ. With EP = 1 (strategy 'local')
// exchangeCounts is skipped and no stage communicates.
//
// Pure: the stages are invoked actors whose implementations the actors layer provides (tensors, collectives).
// Under activation checkpointing the forward runs a second time before backward (FORWARD with pass 'recompute');
// the layer's saved context from the first pass has been dropped by then.

import { assign, fromPromise, setup } from 'xstate';
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
}

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

export type MoeLayerEvent = { type: 'FORWARD'; pass: MoePass } | { type: 'BACKWARD' } | { type: 'DROP' };

export const MOE_STAGES = [
  'route',
  'exchangeCounts',
  'dispatch',
  'compute',
  'combine',
  'combineGrad',
  'computeGrad',
  'dispatchGrad',
  'routerGrad',
] as const;
export type MoeStage = (typeof MOE_STAGES)[number];

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
    routerGrad: stage,
  },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    // The layer's buffers are released by the states that end their use: what the forward kept when the block is
    // checkpointed (DROP, before the recompute), everything left when the backward is done.
    dropForward: () => {},
    releaseLayer: () => {},
  },
  guards: {
    isLocal: ({ context }) => context.strategy === 'local',
  },
}).createMachine({
  id: 'moeLayer',
  context: ({ input }) => ({ ...input, pass: 'forward', error: null }),
  initial: 'idle',
  states: {
    idle: {
      on: { FORWARD: { target: 'forward', actions: assign({ pass: ({ event }) => event.pass }) } },
    },
    forward: {
      initial: 'route',
      states: {
        route: {
          meta: meta({ actor: 'router', category: 'compute' }),
          invoke: {
            id: 'route',
            src: 'route',
            input: stageInput('route'),
            onDone: [{ guard: 'isLocal', target: 'dispatch' }, { target: 'exchangeCounts' }],
            onError,
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
      on: {
        // Activation checkpointing: the whole forward again, with the same collectives, before backward.
        FORWARD: { target: 'forward', actions: assign({ pass: ({ event }) => event.pass }) },
        BACKWARD: 'backward',
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
          invoke: {
            id: 'routerGrad',
            src: 'routerGrad',
            input: stageInput('routerGrad'),
            onDone: '#moeLayer.done',
            onError,
          },
        },
      },
    },
    done: { type: 'final', entry: 'releaseLayer' },
    failed: { type: 'final' },
  },
});

export type MoeLayerMachine = typeof moeLayerMachine;
