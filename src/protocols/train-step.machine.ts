// One optimizer step on one rank, as torchtitan's train loop runs it (torchtitan-semantics.md §5):
//   for each microbatch: embed → forward block 0 … L−1 → loss (norm, output, CE and their backward)
//                        → backward block L−1 … 0 (each preceded by `recompute` when the block is checkpointed)
//                        → embedding backward
//   → reduceGrads (wait for every unit's gradient reduction) → clip → biasUpdate (MoE models) → optimizer → done
//   (grad-only mode: done after reduceGrads).
// The machine is the root of the rank's actor system for the step: on start it spawns the router, the expert
// shard, the optimizer and one FSDP unit per parameter unit as children with systemIds (`router`, `expert`,
// `optimizer`, `fsdp:<unit>`). The step's bookends are messages of this machine itself: zeroGrad, clip, biasUpdate
// and optimizer send their request to the child actor (sendTo its id, = its systemId) with `replyTo: self` and move on its answer
// (CLIPPED carries the grad norm into the context). The forward/backward stages are invoked stages provided by
// the actors layer; they talk to the actors by events (a block's stage unshards the block's FSDP units and, for
// MoE blocks, hands the layer to the expert shard, whose moe-layer machine asks the router to route).

import { assign, enqueueActions, fromPromise, sendTo, setup } from 'xstate';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import { expertMachine } from './expert.machine.ts';
import { fsdpUnitMachine, type FsdpUnitInput } from './fsdp-unit.machine.ts';
import { optimizerMachine } from './optimizer.machine.ts';
import { routerMachine } from './router.machine.ts';
import { errorText, notProvided, type StateMeta } from './state-meta.ts';
import type { MoeStrategy } from './strategies.ts';

// AC modes and torchtitan's block selection are model semantics (torchtitan-semantics.md §5.5); the machine only asks them.
export { isCheckpointed, type AcMode } from '../models/model/ac.ts';

export interface TrainStepInput {
  step: number;
  nLayers: number;
  microbatches: number;
  ac: AcMode;
  /** Whether the model has MoE layers with load balancing (the expert-bias update runs). */
  biasUpdate: boolean;
  /** Forward and backward only: no clipping, no bias update, no optimizer step (`moe-actors grad`, parity). */
  gradOnly: boolean;
  /** The rank's FSDP units, each spawned as actor `fsdp:<unit>`. */
  units: readonly FsdpUnitInput[];
  /** The EP dispatch of the expert shard ('local' when ep = 1). */
  strategy: MoeStrategy;
  /** This step's learning rate (the optimizer's STEP). */
  lr: number;
  /** The clipping threshold (the optimizer's CLIP). */
  maxNorm: number;
}

/** The systemId of a unit's FSDP actor. */
export const fsdpActorId = (unit: string) => `fsdp:${unit}`;

export interface TrainStepContext extends TrainStepInput {
  layer: number;
  microbatch: number;
  /** The pre-clip global gradient norm (null until clipped; grad-only steps never clip). */
  gradNorm: number | null;
  error: string | null;
}

/** START, and the answers of the optimizer and the router to this machine's requests. */
export type TrainStepEvent =
  | { type: 'START' }
  /** The step is given up (a stage failed elsewhere, the watchdog tripped): the machine fails. */
  | { type: 'ABORT' }
  | { type: 'GRADS_ZEROED' }
  | { type: 'CLIPPED'; gradNorm: number }
  | { type: 'STEPPED' }
  | { type: 'BIAS_UPDATED' }
  | { type: 'OPTIMIZER_FAILED'; error: string }
  | { type: 'ROUTER_FAILED'; error: string };

export interface StepStageInput {
  step: number;
  microbatch: number;
  layer: number;
  /** Forward stages: 'forward' or 'recompute'. */
  pass: 'forward' | 'recompute';
  /** Whether the block is activation-checkpointed (decided here, once: forward drops what recompute redoes). */
  checkpointed: boolean;
  /** The state whose effect the stage is (collectives name it as their call site). */
  state: string;
}

const stage = fromPromise<void, StepStageInput>(notProvided('train-step stage'));
const input =
  (state: string, pass: StepStageInput['pass'] = 'forward') =>
  ({ context }: { context: TrainStepContext }): StepStageInput => ({
    step: context.step,
    microbatch: context.microbatch,
    layer: context.layer,
    pass,
    checkpointed: isCheckpointed(context.layer, context.ac),
    state,
  });
const onError = { target: '#trainStep.failed', actions: 'recordError' } as const;
const meta = (m: StateMeta) => m;

export const trainStepMachine = setup({
  types: {
    context: {} as TrainStepContext,
    input: {} as TrainStepInput,
    events: {} as TrainStepEvent,
  },
  actors: {
    routerActor: routerMachine,
    optimizerActor: optimizerMachine,
    expertActor: expertMachine,
    fsdpUnitActor: fsdpUnitMachine,
    forwardEmbed: stage,
    forwardBlock: stage,
    loss: stage,
    recomputeBlock: stage,
    backwardBlock: stage,
    backwardEmbed: stage,
    reduceGrads: stage,
  },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    recordGradNorm: assign({ gradNorm: ({ event }) => (event as { gradNorm: number }).gradNorm }),
    askZeroGrad: sendTo('optimizer', ({ self }) => ({ type: 'ZERO_GRAD', replyTo: self })),
    askClip: sendTo('optimizer', ({ context, self }) => ({ type: 'CLIP', maxNorm: context.maxNorm, replyTo: self })),
    askBiasUpdate: sendTo('router', ({ self }) => ({ type: 'BIAS_UPDATE', replyTo: self })),
    askStep: sendTo('optimizer', ({ context, self }) => ({ type: 'STEP', lr: context.lr, replyTo: self })),
    // Ending in `failed` stops the children, and a stopped actor runs no exit actions: the expert shard's layers
    // are aborted first (delivered before the stop), so each releases its buffers by its own exit action.
    abortLayers: sendTo('expert', { type: 'ABORT' }),
    spawnActors: enqueueActions(({ context, enqueue }) => {
      enqueue.spawnChild('routerActor', { id: 'router', systemId: 'router', input: { step: context.step } });
      enqueue.spawnChild('optimizerActor', { id: 'optimizer', systemId: 'optimizer', input: { step: context.step } });
      enqueue.spawnChild('expertActor', {
        id: 'expert',
        systemId: 'expert',
        input: { step: context.step, strategy: context.strategy },
      });
      for (const u of context.units)
        enqueue.spawnChild('fsdpUnitActor', { id: fsdpActorId(u.unit), systemId: fsdpActorId(u.unit), input: u });
    }),
  },
  guards: {
    moreForward: ({ context }) => context.layer + 1 < context.nLayers,
    moreBackward: ({ context }) => context.layer > 0,
    checkpointed: ({ context }) => isCheckpointed(context.layer, context.ac),
    moreMicrobatches: ({ context }) => context.microbatch + 1 < context.microbatches,
    updatesBias: ({ context }) => context.biasUpdate,
    hasLayers: ({ context }) => context.nLayers > 0,
    gradOnly: ({ context }) => context.gradOnly,
  },
}).createMachine({
  id: 'trainStep',
  context: ({ input }) => ({ ...input, layer: 0, microbatch: 0, gradNorm: null, error: null }),
  initial: 'idle',
  entry: 'spawnActors',
  on: { ABORT: { target: '.failed', actions: assign({ error: 'step aborted' }) } },
  states: {
    idle: { on: { START: 'zeroGrad' } },
    zeroGrad: {
      entry: 'askZeroGrad',
      on: { GRADS_ZEROED: 'microbatch', OPTIMIZER_FAILED: onError },
    },
    microbatch: {
      initial: 'embed',
      states: {
        embed: {
          meta: meta({ actor: 'step', category: 'forward' }),
          entry: assign({ layer: 0 }),
          invoke: {
            id: 'forwardEmbed',
            src: 'forwardEmbed',
            input: input('embed'),
            onDone: [{ guard: 'hasLayers', target: 'forward' }, { target: 'loss' }],
            onError,
          },
        },
        forward: {
          meta: meta({ actor: 'step', category: 'forward' }),
          invoke: { id: 'forwardBlock', src: 'forwardBlock', input: input('forward'), onDone: 'nextForward', onError },
        },
        nextForward: {
          always: [
            { guard: 'moreForward', actions: assign({ layer: ({ context }) => context.layer + 1 }), target: 'forward' },
            { target: 'loss' },
          ],
        },
        loss: {
          meta: meta({ actor: 'step', category: 'forward' }),
          invoke: {
            id: 'loss',
            src: 'loss',
            input: input('loss'),
            onDone: [{ guard: 'hasLayers', target: 'backward' }, { target: 'embedGrad' }],
            onError,
          },
        },
        backward: {
          initial: 'decide',
          states: {
            decide: { always: [{ guard: 'checkpointed', target: 'recompute' }, { target: 'compute' }] },
            recompute: {
              meta: meta({ actor: 'step', category: 'recompute' }),
              invoke: {
                id: 'recomputeBlock',
                src: 'recomputeBlock',
                input: input('recompute', 'recompute'),
                onDone: 'compute',
                onError,
              },
            },
            compute: {
              meta: meta({ actor: 'step', category: 'backward' }),
              invoke: {
                id: 'backwardBlock',
                src: 'backwardBlock',
                input: input('compute'),
                onDone: '#trainStep.microbatch.nextBackward',
                onError,
              },
            },
          },
        },
        nextBackward: {
          always: [
            {
              guard: 'moreBackward',
              actions: assign({ layer: ({ context }) => context.layer - 1 }),
              target: 'backward',
            },
            { target: 'embedGrad' },
          ],
        },
        embedGrad: {
          meta: meta({ actor: 'step', category: 'backward' }),
          invoke: { id: 'backwardEmbed', src: 'backwardEmbed', input: input('embedGrad'), onDone: 'finished', onError },
        },
        finished: { type: 'final' },
      },
      onDone: 'nextMicrobatch',
    },
    nextMicrobatch: {
      always: [
        {
          guard: 'moreMicrobatches',
          actions: assign({ microbatch: ({ context }) => context.microbatch + 1 }),
          target: 'microbatch',
        },
        { target: 'reduceGrads' },
      ],
    },
    reduceGrads: {
      meta: meta({ actor: 'fsdp', category: 'reduce' }),
      invoke: {
        id: 'reduceGrads',
        src: 'reduceGrads',
        input: input('reduceGrads'),
        onDone: [{ guard: 'gradOnly', target: 'done' }, { target: 'clip' }],
        onError,
      },
    },
    clip: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      entry: 'askClip',
      on: {
        CLIPPED: [
          { guard: 'updatesBias', target: 'biasUpdate', actions: 'recordGradNorm' },
          { target: 'optimizer', actions: 'recordGradNorm' },
        ],
        OPTIMIZER_FAILED: onError,
      },
    },
    biasUpdate: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      entry: 'askBiasUpdate',
      on: { BIAS_UPDATED: 'optimizer', ROUTER_FAILED: onError },
    },
    optimizer: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      entry: 'askStep',
      // The optimizer answers STEPPED and ends (its machine is done after the step); the step ends with it, so no
      // child's done notice reaches a finished parent.
      on: { 'xstate.done.actor.optimizer': 'done', OPTIMIZER_FAILED: onError },
    },
    done: { type: 'final' },
    failed: { type: 'final', entry: 'abortLayers' },
  },
});

export type TrainStepMachine = typeof trainStepMachine;
