// The FSDP protocol of one parameter unit on one rank (torchtitan's wrapping: the embedding, each block, each
// MoE block's routed experts on the EP-sharded mesh, norm + output):
//   resharded → unsharding → unsharded → (reshard-after-forward policy) → … → grads → reducing → reduced → resharded
// Unsharding all_gathers the flat parameter shards; reducing reduce_scatters the flat gradients (SUM, then divide
// where the backend lacks PREMUL_SUM; PREMUL_SUM where it has it) and, under HSDP, all_reduces across replicas.
// After backward the unit always reshards (as FSDP2's post-backward does).

import { assign, fromPromise, setup } from 'xstate';
import { errorText, notProvided, type StateMeta } from './state-meta.ts';

/** torchtitan's `reshard_after_forward` policy; "default" means True without pipeline parallelism. */
export type ReshardPolicy = 'default' | 'always' | 'never';

/**
 * How gradients are reduced: 'sum' (divide factor 1: torchtitan divides the loss by the global token count
 * instead), 'sum-divide' (SUM, then a local divide), 'premul-sum' (the backend pre-multiplies).
 */
export type GradReduce = 'sum' | 'sum-divide' | 'premul-sum';

export interface FsdpUnitInput {
  unit: string;
  /** Whether the unit reshards after forward (policy resolved by the caller for this unit). */
  reshardAfterForward: boolean;
  /** HSDP: an all_reduce across dp_replicate follows the reduce_scatter. */
  hsdp: boolean;
  gradReduce: GradReduce;
}

export interface FsdpUnitContext extends FsdpUnitInput {
  purpose: 'forward' | 'backward';
  microbatch: number;
  step: number;
  /** An UNSHARD that arrived while resharding: taken as soon as the reshard is done, so no caller waits first. */
  queued: { purpose: 'forward' | 'backward'; microbatch: number; step: number } | null;
  error: string | null;
}

export type FsdpUnitEvent =
  | { type: 'UNSHARD'; purpose: 'forward' | 'backward'; microbatch: number; step: number }
  | { type: 'FORWARD_DONE' }
  | { type: 'GRADS_READY' };

export interface FsdpStageInput {
  unit: string;
  microbatch: number;
  step: number;
  gradReduce: GradReduce;
  /** The state whose effect the stage is (collectives name it as their call site). */
  state: string;
}

/** Resolves torchtitan's policy for one unit: norm+output reshards only under "always" (torchtitan-semantics.md §4.5). */
export function reshardAfterForward(
  policy: ReshardPolicy,
  unit: { isOutput: boolean },
  pipelineParallel = false,
): boolean {
  if (policy === 'always') return true;
  if (policy === 'never') return false;
  return unit.isOutput ? false : !pipelineParallel;
}

const stage = fromPromise<void, FsdpStageInput>(notProvided('fsdp-unit stage'));
const stageInput =
  (state: string) =>
  ({ context }: { context: FsdpUnitContext }): FsdpStageInput => ({
    unit: context.unit,
    microbatch: context.microbatch,
    step: context.step,
    gradReduce: context.gradReduce,
    state,
  });
const onError = { target: '#fsdpUnit.failed', actions: 'recordError' } as const;
const meta = (m: StateMeta) => m;

export const fsdpUnitMachine = setup({
  types: {
    context: {} as FsdpUnitContext,
    input: {} as FsdpUnitInput,
    events: {} as FsdpUnitEvent,
  },
  actors: {
    unshard: stage,
    reshard: stage,
    reduceScatter: stage,
    divide: stage,
    allReduceReplicas: stage,
  },
  actions: {
    recordError: assign({ error: ({ event }) => errorText(event) }),
    noteUnshard: assign(({ event }) =>
      event.type === 'UNSHARD' ? { purpose: event.purpose, microbatch: event.microbatch, step: event.step } : {},
    ),
    // Adds the reduced gradients into the shard (the FsdpShard provides it; the protocol itself holds no data).
    // Entering `reduced` is the one point every reduction path passes exactly once, after its last stage.
    queueUnshard: assign(({ event }) =>
      event.type === 'UNSHARD'
        ? { queued: { purpose: event.purpose, microbatch: event.microbatch, step: event.step } }
        : {},
    ),
    takeQueued: assign(({ context }) => ({ ...context.queued!, queued: null })),
    accumulate: () => {},
  },
  guards: {
    forBackward: ({ context }) => context.purpose === 'backward',
    eventForBackward: ({ event }) => event.type === 'UNSHARD' && event.purpose === 'backward',
    reshardsAfterForward: ({ context }) => context.reshardAfterForward,
    dividesAfterSum: ({ context }) => context.gradReduce === 'sum-divide',
    isHsdp: ({ context }) => context.hsdp,
    unshardQueued: ({ context }) => context.queued !== null,
  },
}).createMachine({
  id: 'fsdpUnit',
  context: ({ input }) => ({ ...input, purpose: 'forward', microbatch: 0, step: 0, queued: null, error: null }),
  initial: 'resharded',
  states: {
    resharded: {
      on: { UNSHARD: { target: 'unsharding', actions: 'noteUnshard' } },
    },
    unsharding: {
      meta: meta({ actor: 'fsdp', category: 'waiting' }),
      invoke: {
        id: 'unshard',
        src: 'unshard',
        input: stageInput('unsharding'),
        onDone: [{ guard: 'forBackward', target: 'grads' }, { target: 'unsharded' }],
        onError,
      },
    },
    unsharded: {
      on: {
        FORWARD_DONE: [{ guard: 'reshardsAfterForward', target: 'resharding' }, { target: 'kept' }],
      },
    },
    // Kept unsharded after forward (policy "never", or the output unit): backward starts without an all_gather.
    kept: {
      on: {
        UNSHARD: [
          { guard: 'eventForBackward', target: 'grads', actions: 'noteUnshard' },
          { target: 'unsharded', actions: 'noteUnshard' },
        ],
      },
    },
    resharding: {
      meta: meta({ actor: 'fsdp', category: 'other' }),
      invoke: {
        id: 'reshard',
        src: 'reshard',
        input: stageInput('resharding'),
        onDone: [{ guard: 'unshardQueued', target: 'unsharding', actions: 'takeQueued' }, { target: 'resharded' }],
        onError,
      },
      // The output unit under policy "always" is unsharded for backward right after its forward resharded it.
      on: { UNSHARD: { actions: 'queueUnshard' } },
    },
    grads: {
      on: { GRADS_READY: 'reducing' },
    },
    reducing: {
      initial: 'reduceScatter',
      states: {
        reduceScatter: {
          meta: meta({ actor: 'fsdp', category: 'reduce' }),
          invoke: {
            id: 'reduceScatter',
            src: 'reduceScatter',
            input: stageInput('reduceScatter'),
            onDone: [
              { guard: 'isHsdp', target: 'allReduceReplicas' },
              { guard: 'dividesAfterSum', target: 'divide' },
              { target: '#fsdpUnit.reduced' },
            ],
            onError,
          },
        },
        allReduceReplicas: {
          meta: meta({ actor: 'fsdp', category: 'reduce' }),
          invoke: {
            id: 'allReduceReplicas',
            src: 'allReduceReplicas',
            input: stageInput('allReduceReplicas'),
            onDone: [{ guard: 'dividesAfterSum', target: 'divide' }, { target: '#fsdpUnit.reduced' }],
            onError,
          },
        },
        divide: {
          meta: meta({ actor: 'fsdp', category: 'reduce' }),
          invoke: { id: 'divide', src: 'divide', input: stageInput('divide'), onDone: '#fsdpUnit.reduced', onError },
        },
      },
    },
    reduced: {
      entry: 'accumulate',
      always: 'resharding',
    },
    failed: { type: 'final' },
  },
});

export type FsdpUnitMachine = typeof fsdpUnitMachine;
