// The expert shard and the router as an actor system of their own, without a train step: for driving one MoE
// layer by events (bench:ep's layer mode, the actor tests). The root only spawns the two actors under their
// systemIds, as the train-step root does.

import { createActor, setup, spawnChild, type AnyActorRef } from 'xstate';
import type { Communicator } from '../../comm/communicator.ts';
import type { AcMode } from '../../models/model/ac.ts';
import type { MoeLayer } from '../../models/moe/layer.ts';
import { expertMachine } from '../../protocols/expert.machine.ts';
import { routerMachine } from '../../protocols/router.machine.ts';
import { Router } from '../router/router.ts';
import type { StepFailure } from '../wait.ts';
import type { ExpertRef, ExpertShard } from './shard.ts';

export interface ExpertSystem {
  expert: ExpertRef;
  router: Router;
  /** The system's root (stopping it alone runs no exit action: see stop). */
  root: AnyActorRef;
  /** Aborts the layers still running (their buffers go back to the pool) and stops the system. */
  stop(): void;
}

export function startExpertSystem(
  shard: ExpertShard,
  w: { layers: () => readonly MoeLayer[]; ac: AcMode; loss: Communicator; failure: StepFailure; step?: number },
): ExpertSystem {
  const router = new Router();
  const root = setup({ actors: { router: routerMachine, expert: expertMachine } }).createMachine({
    entry: [
      spawnChild('router', { id: 'router', systemId: 'router', input: { step: w.step ?? 1 } }),
      spawnChild('expert', {
        id: 'expert',
        systemId: 'expert',
        input: { step: w.step ?? 1, strategy: shard.strategy },
      }),
    ],
  });
  const actor = createActor(
    root.provide({
      actors: {
        router: router.machine({
          records: (h) => shard.record(h),
          layers: w.layers,
          ac: w.ac,
          loss: w.loss,
          failure: w.failure,
        }),
        expert: shard.machine,
      },
    }),
  );
  actor.start();
  const expert = actor.system.get('expert') as ExpertRef;
  return {
    expert,
    router,
    root: actor,
    // Layers still running end by ABORT first, so their exit actions release their buffers (stop runs none).
    stop: () => {
      expert.send({ type: 'ABORT' });
      actor.stop();
    },
  };
}
