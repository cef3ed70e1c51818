// The FSDP protocol of one parameter unit on one rank (torchtitan's wrapping: the embedding, each block, each
// MoE block's routed experts on the EP-sharded mesh, norm + output):
//   resharded → unsharding → unsharded → (reshard-after-forward policy) → … → grads → reducing → reduced → resharded
// Unsharding all_gathers the flat parameter shards; reducing reduce_scatters the flat gradients (SUM, then divide
// where the backend lacks PREMUL_SUM; PREMUL_SUM where it has it) and, under HSDP, all_reduces across replicas.
// After backward the unit always reshards (as FSDP2's post-backward does).
// Requests are answered to their `replyTo`: UNSHARD with UNSHARDED once the unit is gathered (for backward: with its
// gradients to be filled), GRADS_READY with REDUCED once the reduction and the reshard after it are done, and either
// with FSDP_FAILED when the unit fails. An UNSHARD that arrives while the unit reshards, holds gradients or reduces
// them is queued and taken after the reshard, so no asker waits for the unit before asking.

import { assign, enqueueActions, fromPromise, setup, type AnyActorRef } from 'xstate';
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
  /** An UNSHARD that arrived while resharding / holding or reducing grads: taken when the reshard is done. */
  queued: { purpose: 'forward' | 'backward'; microbatch: number; step: number; replyTo: AnyActorRef | null } | null;
  /** The asker of the running UNSHARD and of the running reduction (GRADS_READY), answered once each. */
  replyTo: AnyActorRef | null;
  reduceReplyTo: AnyActorRef | null;
  error: string | null;
}

/** The answers a unit sends to its UNSHARD / GRADS_READY askers. */
export const FSDP_ANSWERS = ['UNSHARDED', 'REDUCED', 'FSDP_FAILED'] as const;

/** The unit's answers to its askers. */
export type FsdpAnswer =
  | { type: 'UNSHARDED'; unit: string; purpose: 'forward' | 'backward'; microbatch: number }
  | { type: 'REDUCED'; unit: string }
  | { type: 'FSDP_FAILED'; unit: string; error: string };

export type FsdpUnitEvent =
  | { type: 'UNSHARD'; purpose: 'forward' | 'backward'; microbatch: number; step: number; replyTo?: AnyActorRef }
  | { type: 'FORWARD_DONE' }
  | { type: 'GRADS_READY'; replyTo?: AnyActorRef };

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
      event.type === 'UNSHARD'
        ? { purpose: event.purpose, microbatch: event.microbatch, step: event.step, replyTo: event.replyTo ?? null }
        : {},
    ),
    noteReduce: assign(({ event }) => (event.type === 'GRADS_READY' ? { reduceReplyTo: event.replyTo ?? null } : {})),
    answerUnsharded: enqueueActions(({ context, enqueue }) => {
      if (!context.replyTo) return;
      const { unit, purpose, microbatch } = context;
      enqueue.sendTo(context.replyTo, { type: 'UNSHARDED', unit, purpose, microbatch } satisfies FsdpAnswer);
      enqueue.assign({ replyTo: null });
    }),
    answerReduced: enqueueActions(({ context, enqueue }) => {
      if (!context.reduceReplyTo) return;
      enqueue.sendTo(context.reduceReplyTo, { type: 'REDUCED', unit: context.unit } satisfies FsdpAnswer);
      enqueue.assign({ reduceReplyTo: null });
    }),
    // A failed unit answers everyone who still waits on it.
    answerFailed: enqueueActions(({ context, enqueue }) => {
      const answer: FsdpAnswer = {
        type: 'FSDP_FAILED',
        unit: context.unit,
        error: context.error ?? 'fsdp unit failed',
      };
      for (const to of [context.replyTo, context.queued?.replyTo, context.reduceReplyTo])
        if (to) enqueue.sendTo(to, answer);
    }),
    // Adds the reduced gradients into the shard (the FsdpShard provides it; the protocol itself holds no data).
    // Entering `reduced` is the one point every reduction path passes exactly once, after its last stage.
    queueUnshard: assign(({ event }) =>
      event.type === 'UNSHARD'
        ? {
            queued: {
              purpose: event.purpose,
              microbatch: event.microbatch,
              step: event.step,
              replyTo: event.replyTo ?? null,
            },
          }
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
    sameBackward: ({ context, event }) =>
      event.type === 'UNSHARD' && event.purpose === 'backward' && event.microbatch === context.microbatch,
  },
}).createMachine({
  id: 'fsdpUnit',
  context: ({ input }) => ({
    ...input,
    purpose: 'forward',
    microbatch: 0,
    step: 0,
    queued: null,
    replyTo: null,
    reduceReplyTo: null,
    error: null,
  }),
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
      entry: 'answerUnsharded',
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
        onDone: [
          { guard: 'unshardQueued', target: 'unsharding', actions: ['answerReduced', 'takeQueued'] },
          { target: 'resharded', actions: 'answerReduced' },
        ],
        onError,
      },
      // The output unit under policy "always" is unsharded for backward right after its forward resharded it.
      on: { UNSHARD: { actions: 'queueUnshard' } },
    },
    // The unit holds this microbatch's gradients until its reduction's turn (program order, on every rank): an
    // UNSHARD for the next microbatch waits in the queue meanwhile.
    grads: {
      entry: 'answerUnsharded',
      on: {
        GRADS_READY: { target: 'reducing', actions: 'noteReduce' },
        UNSHARD: [
          // The block's backward after its recompute asks again: it holds what that asks for already.
          { guard: 'sameBackward', actions: ['noteUnshard', 'answerUnsharded'] },
          { actions: 'queueUnshard' },
        ],
      },
    },
    reducing: {
      on: { UNSHARD: { actions: 'queueUnshard' } },
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
    failed: { type: 'final', entry: 'answerFailed' },
  },
});

export type FsdpUnitMachine = typeof fsdpUnitMachine;
