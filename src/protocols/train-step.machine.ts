// One optimizer step on one rank, as torchtitan's train loop runs it (spec §5):
//   for each microbatch: embed → forward block 0 … L−1 → loss (norm, output, CE and their backward)
//                        → backward block L−1 … 0 (each preceded by `recompute` when the block is checkpointed)
//                        → embedding backward
//   → reduceGrads (wait for every unit's gradient reduction) → clip → biasUpdate (MoE models) → optimizer → done.
// Each invoked stage is provided by the actors layer; a block's stage drives the block's FSDP unit and, for MoE
// blocks, its moe-layer machine.

import { assign, fromPromise, setup } from 'xstate';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import { errorText, notProvided, type StateMeta } from './state-meta.ts';

// AC modes and torchtitan's block selection are model semantics (spec §5.5); the machine only asks them.
export { isCheckpointed, type AcMode } from '../models/model/ac.ts';

export interface TrainStepInput {
  step: number;
  nLayers: number;
  microbatches: number;
  ac: AcMode;
  /** Whether the model has MoE layers with load balancing (the expert-bias update runs). */
  biasUpdate: boolean;
}

export interface TrainStepContext extends TrainStepInput {
  layer: number;
  microbatch: number;
  error: string | null;
}

export type TrainStepEvent = { type: 'START' };

export interface StepStageInput {
  step: number;
  microbatch: number;
  layer: number;
  /** Forward stages: 'forward' or 'recompute'. */
  pass: 'forward' | 'recompute';
}

const stage = fromPromise<void, StepStageInput>(notProvided('train-step stage'));
const input =
  (pass: StepStageInput['pass']) =>
  ({ context }: { context: TrainStepContext }): StepStageInput => ({
    step: context.step,
    microbatch: context.microbatch,
    layer: context.layer,
    pass,
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
    forwardEmbed: stage,
    forwardBlock: stage,
    loss: stage,
    recomputeBlock: stage,
    backwardBlock: stage,
    backwardEmbed: stage,
    reduceGrads: stage,
    clip: stage,
    biasUpdate: stage,
    optimizer: stage,
  },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
  },
  guards: {
    moreForward: ({ context }) => context.layer + 1 < context.nLayers,
    moreBackward: ({ context }) => context.layer > 0,
    checkpointed: ({ context }) => isCheckpointed(context.layer, context.ac),
    moreMicrobatches: ({ context }) => context.microbatch + 1 < context.microbatches,
    updatesBias: ({ context }) => context.biasUpdate,
    hasLayers: ({ context }) => context.nLayers > 0,
  },
}).createMachine({
  id: 'trainStep',
  context: ({ input }) => ({ ...input, layer: 0, microbatch: 0, error: null }),
  initial: 'idle',
  states: {
    idle: { on: { START: 'microbatch' } },
    microbatch: {
      initial: 'embed',
      states: {
        embed: {
          meta: meta({ actor: 'step', category: 'forward' }),
          entry: assign({ layer: 0 }),
          invoke: {
            id: 'forwardEmbed',
            src: 'forwardEmbed',
            input: input('forward'),
            onDone: [{ guard: 'hasLayers', target: 'forward' }, { target: 'loss' }],
            onError,
          },
        },
        forward: {
          meta: meta({ actor: 'step', category: 'forward' }),
          invoke: { id: 'forwardBlock', src: 'forwardBlock', input: input('forward'), onDone: 'nextForward', onError },
        },
        nextForward: {
          always: [{ guard: 'moreForward', actions: assign({ layer: ({ context }) => context.layer + 1 }), target: 'forward' }, { target: 'loss' }],
        },
        loss: {
          meta: meta({ actor: 'step', category: 'forward' }),
          invoke: {
            id: 'loss',
            src: 'loss',
            input: input('forward'),
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
              invoke: { id: 'recomputeBlock', src: 'recomputeBlock', input: input('recompute'), onDone: 'compute', onError },
            },
            compute: {
              meta: meta({ actor: 'step', category: 'backward' }),
              invoke: { id: 'backwardBlock', src: 'backwardBlock', input: input('forward'), onDone: '#trainStep.microbatch.nextBackward', onError },
            },
          },
        },
        nextBackward: {
          always: [
            { guard: 'moreBackward', actions: assign({ layer: ({ context }) => context.layer - 1 }), target: 'backward' },
            { target: 'embedGrad' },
          ],
        },
        embedGrad: {
          meta: meta({ actor: 'step', category: 'backward' }),
          invoke: { id: 'backwardEmbed', src: 'backwardEmbed', input: input('forward'), onDone: 'finished', onError },
        },
        finished: { type: 'final' },
      },
      onDone: 'nextMicrobatch',
    },
    nextMicrobatch: {
      always: [
        { guard: 'moreMicrobatches', actions: assign({ microbatch: ({ context }) => context.microbatch + 1 }), target: 'microbatch' },
        { target: 'reduceGrads' },
      ],
    },
    reduceGrads: {
      meta: meta({ actor: 'fsdp', category: 'reduce' }),
      invoke: { id: 'reduceGrads', src: 'reduceGrads', input: input('forward'), onDone: 'clip', onError },
    },
    clip: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      invoke: {
        id: 'clip',
        src: 'clip',
        input: input('forward'),
        onDone: [{ guard: 'updatesBias', target: 'biasUpdate' }, { target: 'optimizer' }],
        onError,
      },
    },
    biasUpdate: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      invoke: { id: 'biasUpdate', src: 'biasUpdate', input: input('forward'), onDone: 'optimizer', onError },
    },
    optimizer: {
      meta: meta({ actor: 'optimizer', category: 'optimizer' }),
      invoke: { id: 'optimizer', src: 'optimizer', input: input('forward'), onDone: 'done', onError },
    },
    done: { type: 'final' },
    failed: { type: 'final' },
  },
});

export type TrainStepMachine = typeof trainStepMachine;
