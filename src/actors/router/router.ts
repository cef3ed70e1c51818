// The router actor (`router`) of a rank: the MoE layers' routing (scores, top-k, gates, counts; and the gradient
// back through them) and the auxiliary-loss-free expert-bias update (torchtitan-semantics.md §3.4): halve the counts
// of checkpointed blocks, all_reduce them over the loss group, move every rank's bias identically, zero the counts.
// Its machine is protocols/router.machine.ts (a queue of requests, each answered to its replyTo); requests name a
// layer × microbatch handle, which `records` resolves to the expert shard's step record.

import { fromPromise } from 'xstate';
import type { CallSite, Communicator } from '../../comm/communicator.ts';
import { isCheckpointed, type AcMode } from '../../models/model/ac.ts';
import { expertBiasUpdate, halveCheckpointedCounts } from '../../models/moe/load-balance.ts';
import type { MoeLayer } from '../../models/moe/layer.ts';
import { routerMachine, type MoeHandle, type RouterStageInput } from '../../protocols/router.machine.ts';
import { siteOf } from '../call-site.ts';
import type { StepFailure } from '../wait.ts';
import type { MoeStep } from '../expert/ep/moe-step.ts';

export interface RouterWiring {
  /** The expert shard's step record of a handle. */
  records: (h: MoeHandle) => MoeStep;
  layers: () => readonly MoeLayer[];
  ac: AcMode;
  /** The loss group (every rank that contributes to the loss): the bias update's all_reduce. */
  loss: Communicator;
  failure: StepFailure;
}

export class Router {
  /** Stage route: x → routing of this rank's tokens; the counts go into tokens_per_expert. */
  route(s: MoeStep): void {
    const r = s.layer.route(s.rt, s.x, s.N);
    s.route = r.route;
    s.routeCtx = r.ctx;
  }

  /** Stage routerGrad: gate grads → input grads and router weight grads. */
  routerGrad(s: MoeStep): void {
    s.layer.routerGrad(s.rt, s.routeCtx!, s.route!, s.dGates!, s.dx!);
    s.routeCtx = undefined;
  }

  /** The optimizer pre-hook's expert-bias update of every MoE layer with a bias. */
  async updateBiases(layers: readonly MoeLayer[], ac: AcMode, loss: Communicator, site?: CallSite): Promise<void> {
    const biased = layers.filter((m) => m.buffers.expertBias !== null);
    if (biased.length === 0) return;
    const E = biased[0]!.spec.args.num_experts;
    const counts = new Float32Array(biased.length * E);
    biased.forEach((m, i) => {
      if (isCheckpointed(m.layerId, ac)) halveCheckpointedCounts(m.buffers.tokensPerExpert);
      counts.set(m.buffers.tokensPerExpert, i * E);
    });
    await loss.allReduce(counts, { op: 'sum' }, { tag: 'tokens per expert', site });
    biased.forEach((m, i) => {
      expertBiasUpdate(counts.subarray(i * E, (i + 1) * E), m.buffers.expertBias!, m.spec.args.load_balance_coeff!);
      m.buffers.tokensPerExpert.fill(0);
    });
  }

  /** The router machine with this router's stages. */
  machine(w: RouterWiring) {
    const stage = (fn: (input: RouterStageInput) => Promise<void> | void) =>
      fromPromise<void, RouterStageInput>(async ({ input }) => {
        try {
          await fn(input);
        } catch (e) {
          w.failure.first ??= e;
          throw e;
        }
      });
    return routerMachine.provide({
      actors: {
        route: stage((i) => this.route(w.records(i.handle!))),
        routerGrad: stage((i) => this.routerGrad(w.records(i.handle!))),
        biasUpdate: stage((i) => this.updateBiases(w.layers(), w.ac, w.loss, siteOf('optimizer', 'router', i))),
      },
    });
  }
}
