// The expert-shard actor's protocol on one rank: it owns the local experts of every MoE layer and runs one
// moe-layer machine per MoE layer × microbatch as its child (`moe:<layer>/<microbatch>`), spawned by the first
// FORWARD of that layer and microbatch, handed the recompute FORWARD and the BACKWARD, and gone when its backward
// is done; each layer answers its FORWARD / BACKWARD asker (`replyTo`) itself. Its children find the router
// (systemId `router`) through the actor system. ABORT (a failed step) is passed to every running layer, which ends
// in `aborted` and so releases what it holds (its exit action) and answers its asker, if one still waits.

import { enqueueActions, setup, stopChild, type AnyActorRef } from 'xstate';
import { moeLayerMachine, type MoePass } from './moe-layer.machine.ts';
import type { MoeStrategy } from './strategies.ts';

export interface ExpertInput {
  step: number;
  strategy: MoeStrategy;
}

export type ExpertEvent =
  /** The layer's forward (or recompute); the layer answers FORWARD_DONE / MOE_FAILED to `replyTo`. */
  | { type: 'FORWARD'; layer: number; microbatch: number; pass: MoePass; replyTo: AnyActorRef }
  /** The layer's backward; answered BACKWARD_DONE / MOE_FAILED to `replyTo`. */
  | { type: 'BACKWARD'; layer: number; microbatch: number; replyTo: AnyActorRef }
  /** Activation checkpointing: the block's forward buffers go (it is recomputed before backward). */
  | { type: 'DROP'; layer: number; microbatch: number }
  | { type: 'ABORT' };

/** The child id of a layer × microbatch's moe-layer machine. */
export const moeLayerId = (layer: number, microbatch: number) => `moe:${layer}/${microbatch}`;

export const expertMachine = setup({
  types: {
    context: {} as ExpertInput,
    input: {} as ExpertInput,
    events: {} as ExpertEvent,
  },
  actors: { moeLayer: moeLayerMachine },
}).createMachine({
  id: 'expert',
  context: ({ input }) => input,
  initial: 'serving',
  states: {
    serving: {
      on: {
        FORWARD: {
          actions: enqueueActions(({ context, event, enqueue, self }) => {
            const id = moeLayerId(event.layer, event.microbatch);
            if (!self.getSnapshot().children[id]) {
              enqueue.spawnChild('moeLayer', {
                id,
                input: {
                  layer: event.layer,
                  microbatch: event.microbatch,
                  step: context.step,
                  strategy: context.strategy,
                },
              });
            }
            enqueue.sendTo(id, { type: 'FORWARD', pass: event.pass, replyTo: event.replyTo });
          }),
        },
        // A layer's backward is done (or it failed, and its waiter has the error): the child goes.
        'xstate.done.actor.*': {
          actions: stopChild(({ event }) => (event as unknown as { actorId: string }).actorId),
        },
        BACKWARD: {
          actions: enqueueActions(({ event, enqueue, self }) => {
            const id = moeLayerId(event.layer, event.microbatch);
            // No machine for it (a backward without a forward): the asker is answered, not left waiting.
            if (!self.getSnapshot().children[id])
              enqueue.sendTo(event.replyTo, {
                type: 'MOE_FAILED',
                layer: event.layer,
                microbatch: event.microbatch,
                error: `moe layer ${event.layer} microbatch ${event.microbatch}: backward without a forward`,
              });
            else enqueue.sendTo(id, { type: 'BACKWARD', replyTo: event.replyTo });
          }),
        },
        DROP: {
          actions: enqueueActions(({ event, enqueue }) => {
            enqueue.sendTo(moeLayerId(event.layer, event.microbatch), { type: 'DROP' });
          }),
        },
        ABORT: {
          actions: enqueueActions(({ enqueue, self }) => {
            for (const id of Object.keys(self.getSnapshot().children)) enqueue.sendTo(id, { type: 'ABORT' });
          }),
        },
      },
    },
  },
});

export type ExpertMachine = typeof expertMachine;
