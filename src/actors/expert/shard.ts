// The expert-shard actor (`expert`) of a rank: it owns the MoE layers' local experts (E/ep of them) and provides
// the stages of the moe-layer machines its own machine (protocols/expert.machine.ts) runs per MoE layer ×
// microbatch — exchangeCounts, dispatch, compute, combine and the backward duals — over the rank's EP group with
// the planned dispatch strategy. Routing belongs to the router actor: the moe-layer machine's route and routerGrad
// states ask it by event, naming the layer × microbatch step record (MoeStep, whose buffers come from the
// activation pool). The record's buffers are released by the machine's states (DROP, and its exit on ending).

import { fromPromise, type ActorRefFrom } from 'xstate';
import type { CallSite, Communicator } from '../../comm/communicator.ts';
import type { MoeLayer } from '../../models/moe/layer.ts';
import { releaseRoute, releaseRouteCtx } from '../../models/moe/router.ts';
import { releaseExpertsCtx } from '../../models/moe/experts.ts';
import { releaseCombineCtx } from '../../models/moe/combine.ts';
import type { Runtime } from '../../models/runtime.ts';
import { expertMachine, moeLayerId } from '../../protocols/expert.machine.ts';
import { moeLayerMachine, type MoePass, type MoeStageInput } from '../../protocols/moe-layer.machine.ts';
import type { MoeHandle } from '../../protocols/router.machine.ts';
import type { MoeStrategy } from '../../protocols/strategies.ts';
import { siteOf } from '../call-site.ts';
import { ask, type StepFailure } from '../wait.ts';
import { a2aDispatch } from './ep/dispatch-a2a.ts';
import { allgatherPaddedDispatch } from './ep/dispatch-allgather-padded.ts';
import { allgatherRsDispatch } from './ep/dispatch-allgather-rs.ts';
import { localDispatch } from './ep/dispatch-local.ts';
import { bindDispatch, type BoundDispatch, type MoeStep } from './ep/moe-step.ts';

const DISPATCH: Record<MoeStrategy, () => BoundDispatch> = {
  local: () => bindDispatch(localDispatch),
  a2a: () => bindDispatch(a2aDispatch),
  'allgather-padded': () => bindDispatch(allgatherPaddedDispatch),
  'allgather-rs': () => bindDispatch(allgatherRsDispatch),
};

/** The expert shard's machine as spawned in the step's actor system. */
export type ExpertRef = ActorRefFrom<typeof expertMachine>;

export class ExpertShard {
  /** Step records of the layers × microbatches whose backward has not run yet. */
  private readonly running = new Map<string, MoeStep>();
  private readonly dispatch: BoundDispatch;
  /** The implementations of the expert machine (spawned per step by the train-step root). */
  readonly machine;

  constructor(
    private readonly rt: Runtime,
    private readonly ep: Communicator,
    readonly strategy: MoeStrategy,
    private readonly failure: StepFailure,
  ) {
    this.dispatch = DISPATCH[strategy]();
    if (strategy === 'local' && ep.size !== 1)
      throw new Error(`strategy "local" needs an EP group of size 1, got ${ep.size}`);
    if (strategy !== 'local' && ep.size < 2)
      throw new Error(`EP strategy "${strategy}" needs an EP group of at least 2 ranks`);
    const stage = (fn: (s: MoeStep, site: CallSite) => Promise<void> | void) =>
      fromPromise<void, MoeStageInput>(async ({ input }) => {
        const step = this.running.get(key(input.layer, input.microbatch));
        if (!step) throw new Error(`moe layer ${input.layer} microbatch ${input.microbatch}: no running step`);
        try {
          await fn(step, siteOf('expert', 'moeLayer', input));
        } catch (e) {
          this.failure.first ??= e;
          throw e;
        }
      });
    const d = this.dispatch;
    this.machine = expertMachine.provide({
      actors: {
        moeLayer: moeLayerMachine.provide({
          actions: {
            dropForward: ({ context }) => {
              const s = this.running.get(key(context.layer, context.microbatch));
              if (s) this.release(s);
            },
            // The machine ended (backward done, a stage failed, or the step aborted): what it still holds goes.
            releaseLayer: ({ context }) => {
              const k = key(context.layer, context.microbatch);
              const s = this.running.get(k);
              if (s) this.release(s);
              this.running.delete(k);
            },
          },
          actors: {
            exchangeCounts: stage((s, site) => d.exchangeCounts(s, site)),
            dispatch: stage((s, site) => d.dispatch(s, site)),
            compute: stage((s) => this.compute(s)),
            combine: stage((s, site) => this.combine(s, site)),
            combineGrad: stage((s, site) => this.combineGrad(s, site)),
            computeGrad: stage((s) => this.computeGrad(s)),
            dispatchGrad: stage((s, site) => this.dispatchGrad(s, site)),
          },
        }),
      },
    });
  }

  /** The step record a router request names. */
  record(h: MoeHandle): MoeStep {
    const s = this.running.get(key(h.layer, h.microbatch));
    if (!s)
      throw new Error(
        `moe layer ${h.layer} microbatch ${h.microbatch}: no step record (the router was asked after the layer finished)`,
      );
    return s;
  }

  /**
   * Runs the MoE layer's forward (or recompute) for one microbatch; x (N·D) is the normed block input, owned by
   * the caller until backward. Returns the layer output (N·D, caller owns).
   */
  async forward(
    expert: ExpertRef,
    layer: MoeLayer,
    x: Float32Array,
    N: number,
    microbatch: number,
    pass: MoePass,
  ): Promise<Float32Array> {
    const k = key(layer.layerId, microbatch);
    const prev = this.running.get(k);
    if (pass === 'forward' && prev)
      throw new Error(`moe layer ${layer.layerId} microbatch ${microbatch}: forward while a previous one is pending`);
    if (pass === 'recompute' && !prev)
      throw new Error(`moe layer ${layer.layerId} microbatch ${microbatch}: recompute without a forward`);
    const step = this.newStep(layer, x, N, microbatch);
    this.running.set(k, step);
    await ask(
      (replyTo) => expert.send({ type: 'FORWARD', layer: layer.layerId, microbatch, pass, replyTo }),
      'FORWARD_DONE',
      'MOE_FAILED',
      this.failure,
      { who: `block ${layer.layerId} mb ${microbatch} (${pass})`, whom: `expert FORWARD_DONE of ${step.tag}` },
    );
    const out = step.out!;
    step.out = undefined;
    return out;
  }

  /** Activation checkpointing: the layer's machine drops what the forward kept (recomputed before backward). */
  dropForward(expert: ExpertRef, layerId: number, microbatch: number): void {
    expert.send({ type: 'DROP', layer: layerId, microbatch });
  }

  /** Backward of the pending forward: dOut (N·D) → dx (N·D, caller owns). Grads accumulate into the units. */
  async backward(expert: ExpertRef, layerId: number, microbatch: number, dOut: Float32Array): Promise<Float32Array> {
    const k = key(layerId, microbatch);
    const s = this.running.get(k);
    if (!s) throw new Error(`moe layer ${layerId} microbatch ${microbatch}: backward without a forward`);
    s.dOut = dOut;
    await ask(
      (replyTo) => expert.send({ type: 'BACKWARD', layer: layerId, microbatch, replyTo }),
      'BACKWARD_DONE',
      'MOE_FAILED',
      this.failure,
      { who: `block ${layerId} mb ${microbatch} (backward)`, whom: `expert BACKWARD_DONE of ${s.tag}` },
    );
    const dx = s.dx!;
    s.dx = undefined;
    return dx;
  }

  /** The running layer machines and their states ("layer 3 mb 0: forward.dispatch"), for hang reports. */
  describe(expert: ExpertRef | undefined): string {
    return [...this.running.keys()]
      .map((k) => {
        const [layer, mb] = k.split('/').map(Number) as [number, number];
        const c = expert?.getSnapshot().children[moeLayerId(layer, mb)];
        return `layer ${layer} mb ${mb}: ${c ? JSON.stringify(c.getSnapshot().value) : 'no machine'}`;
      })
      .join(', ');
  }

  private newStep(layer: MoeLayer, x: Float32Array, N: number, microbatch: number): MoeStep {
    const a = layer.spec.args;
    return {
      layer,
      rt: this.rt,
      ep: this.ep,
      N,
      D: layer.D,
      K: a.top_k,
      E: a.num_experts,
      L: layer.experts.count,
      P: this.ep.size,
      x,
      microbatch,
      tag: `layer ${layer.layerId} mb ${microbatch}`,
    };
  }

  // ---- stages ----

  private compute(s: MoeStep): void {
    const ex = s.layer.compute(s.rt, s.localRows!, s.localCounts!);
    s.expertsCtx = ex.ctx;
    s.yLocal = ex.out;
  }

  private async combine(s: MoeStep, site: CallSite): Promise<void> {
    // The combine collective is in flight while the shared expert computes (torchtitan overlaps them too).
    const pending = this.dispatch.combine(s, site);
    const sh = s.layer.sharedForward(s.rt, s.x, s.N);
    await pending;
    if (sh) {
      s.rt.k.add(s.out!, sh.out, s.out!, s.N * s.D);
      s.rt.pool.release(sh.out);
    }
    s.sharedCtx = sh?.ctx ?? null;
  }

  private async combineGrad(s: MoeStep, site: CallSite): Promise<void> {
    const { rt, N, D, K } = s;
    s.dGates = rt.pool.zeros(N * K);
    const pending = this.dispatch.combineGrad(s, site);
    s.dx = s.layer.shared && s.sharedCtx ? s.layer.shared.backward(rt, s.sharedCtx, s.dOut!) : rt.pool.zeros(N * D);
    s.sharedCtx = null;
    await pending;
  }

  private computeGrad(s: MoeStep): void {
    s.dRowsLocal = s.layer.computeGrad(s.rt, s.expertsCtx!, s.dYLocal!);
    s.expertsCtx = undefined;
    s.rt.pool.release(s.dYLocal);
    s.dYLocal = undefined;
    s.rt.pool.release(s.localRows);
    s.localRows = undefined;
  }

  private async dispatchGrad(s: MoeStep, site: CallSite): Promise<void> {
    await this.dispatch.dispatchGrad(s, site);
    s.rt.pool.release(s.dRowsLocal);
    s.dRowsLocal = undefined;
  }

  /**
   * Releases every buffer of the layer × microbatch the record still holds: what the forward kept (DROP before a
   * recompute) or, when the machine ends, whatever is left (after backward only the routing, gate grads and the strategy's plan, permutation included).
   */
  private release(s: MoeStep): void {
    const rt = s.rt;
    if (s.routeCtx) releaseRouteCtx(rt, s.routeCtx);
    if (s.expertsCtx) releaseExpertsCtx(rt, s.expertsCtx);
    if (s.combineCtx) releaseCombineCtx(rt, s.combineCtx);
    if (s.sharedCtx && s.layer.shared) s.layer.shared.release(rt, s.sharedCtx);
    rt.pool.release(s.localRows);
    rt.pool.release(s.yLocal);
    rt.pool.release(s.dGates);
    if (s.route) releaseRoute(rt, s.route);
    this.dispatch.release(s);
    s.routeCtx = s.expertsCtx = s.combineCtx = s.localRows = s.yLocal = s.dGates = s.route = undefined;
    s.sharedCtx = null;
  }
}

function key(layer: number, microbatch: number): string {
  return `${layer}/${microbatch}`;
}
