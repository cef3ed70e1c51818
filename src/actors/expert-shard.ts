// The ExpertShard and Router actors of a rank: they own the MoE layers' local experts (E/ep of them) and the
// router, and provide the stage implementations of the moe-layer machine — route, exchangeCounts, dispatch,
// compute, combine and the backward duals — over the rank's EP group with the planned dispatch strategy.
// One machine instance runs per MoE layer per microbatch; its working buffers live in a MoeStep.

import { createActor, fromPromise, type Actor } from 'xstate';
import type { Communicator } from '../comm/communicator.ts';
import type { MoeLayer } from '../models/moe/layer.ts';
import { releasePermutation } from '../models/moe/permute.ts';
import { releaseRoute, releaseRouteCtx } from '../models/moe/router.ts';
import { releaseExpertsCtx } from '../models/moe/experts.ts';
import { releaseCombineCtx } from '../models/moe/combine.ts';
import type { Runtime } from '../models/runtime.ts';
import { moeLayerMachine, type MoePass, type MoeStageInput } from '../protocols/moe-layer.machine.ts';
import type { MoeStrategy } from '../protocols/strategies.ts';
import { a2aDispatch } from './ep/dispatch-a2a.ts';
import { allgatherPaddedDispatch } from './ep/dispatch-allgather-padded.ts';
import { allgatherRsDispatch } from './ep/dispatch-allgather-rs.ts';
import { localDispatch } from './ep/dispatch-local.ts';
import type { EpDispatch, MoeStep } from './ep/moe-step.ts';
import type { RankPosition, TraceBridge } from './trace-bridge.ts';
import { Router } from './router.ts';

const DISPATCH: Record<MoeStrategy, EpDispatch> = {
  local: localDispatch,
  a2a: a2aDispatch,
  'allgather-padded': allgatherPaddedDispatch,
  'allgather-rs': allgatherRsDispatch,
};

type MoeActor = Actor<typeof moeLayerMachine>;

interface Running {
  step: MoeStep;
  actor: MoeActor;
}

export class ExpertShard {
  private readonly running = new Map<string, Running>();
  private readonly machine;
  private readonly dispatch: EpDispatch;

  constructor(
    private readonly rt: Runtime,
    private readonly ep: Communicator,
    readonly strategy: MoeStrategy,
    private readonly bridge: TraceBridge | null,
    private readonly position: RankPosition,
    private readonly router: Router = new Router(),
  ) {
    this.dispatch = DISPATCH[strategy];
    if (strategy === 'local' && ep.size !== 1) throw new Error(`strategy "local" needs an EP group of size 1, got ${ep.size}`);
    if (strategy !== 'local' && ep.size < 2) throw new Error(`EP strategy "${strategy}" needs an EP group of at least 2 ranks`);
    const stage = (fn: (s: MoeStep, input: MoeStageInput) => Promise<void> | void, actorRow: string) =>
      fromPromise<void, MoeStageInput>(async ({ input }) => {
        const run = this.running.get(key(input.layer, input.microbatch));
        if (!run) throw new Error(`moe layer ${input.layer} microbatch ${input.microbatch}: no running step`);
        this.position.actor = actorRow;
        this.position.layer = input.layer;
        this.position.microbatch = input.microbatch;
        try {
          await fn(run.step, input);
        } catch (e) {
          run.step.error = e; // the machine keeps only the message; callers rethrow the original (CollectiveError)
          throw e;
        }
      });
    const d = this.dispatch;
    this.machine = moeLayerMachine.provide({
      actors: {
        route: stage((s) => this.router.route(s), 'router'),
        exchangeCounts: stage((s) => d.exchangeCounts(s), 'expert'),
        dispatch: stage((s) => d.dispatch(s), 'expert'),
        compute: stage((s) => this.compute(s), 'expert'),
        combine: stage((s) => this.combine(s), 'expert'),
        combineGrad: stage((s) => this.combineGrad(s), 'expert'),
        computeGrad: stage((s) => this.computeGrad(s), 'expert'),
        dispatchGrad: stage((s) => this.dispatchGrad(s), 'expert'),
        routerGrad: stage((s) => this.routerGrad(s), 'router'),
      },
    });
  }

  /**
   * Runs the MoE layer's forward (or recompute) for one microbatch; x (N·D) is the normed block input, owned by
   * the caller until backward. Returns the layer output (N·D, caller owns).
   */
  async forward(layer: MoeLayer, x: Float32Array, N: number, microbatch: number, stepNo: number, pass: MoePass): Promise<Float32Array> {
    const k = key(layer.layerId, microbatch);
    let run = this.running.get(k);
    if (pass === 'forward' && run) throw new Error(`moe layer ${layer.layerId} microbatch ${microbatch}: forward while a previous one is pending`);
    if (pass === 'recompute' && !run) throw new Error(`moe layer ${layer.layerId} microbatch ${microbatch}: recompute without a forward`);
    const step = this.newStep(layer, x, N, microbatch);
    if (!run) {
      const actor = createActor(this.machine, {
        input: { layer: layer.layerId, microbatch, step: stepNo, strategy: this.strategy },
        inspect: this.bridge?.inspect,
      });
      this.bridge?.label(actor, 'moeLayer', layer.layerId, microbatch);
      run = { step, actor };
      this.running.set(k, run);
      actor.start();
    } else run.step = step;
    run.actor.send({ type: 'FORWARD', pass });
    await settled(run.actor, (s) => s.matches('forwardDone'), () => run!.step.error);
    const out = step.out!;
    step.out = undefined;
    return out;
  }

  /** Activation checkpointing: drops what the forward kept (the block is recomputed before backward). */
  dropForward(layerId: number, microbatch: number): void {
    const run = this.running.get(key(layerId, microbatch));
    if (run) this.releaseForward(run.step);
  }

  /** Backward of the pending forward: dOut (N·D) → dx (N·D, caller owns). Grads accumulate into the units. */
  async backward(layerId: number, microbatch: number, dOut: Float32Array): Promise<Float32Array> {
    const k = key(layerId, microbatch);
    const run = this.running.get(k);
    if (!run) throw new Error(`moe layer ${layerId} microbatch ${microbatch}: backward without a forward`);
    run.step.dOut = dOut;
    run.actor.send({ type: 'BACKWARD' });
    await settled(run.actor, (s) => s.status === 'done', () => run.step.error);
    this.running.delete(k);
    run.actor.stop();
    const dx = run.step.dx!;
    run.step.dx = undefined;
    return dx;
  }

  /** The running layer machines and their states ("layer 3 mb 0: forward.dispatch"), for hang reports. */
  describe(): string {
    return [...this.running.entries()].map(([k, r]) => `layer ${k.replace('/', ' mb ')}: ${JSON.stringify(r.actor.getSnapshot().value)}`).join(', ');
  }

  /** Drops every running layer (a failed step); their buffers go back to the pool. */
  abort(): void {
    for (const run of this.running.values()) {
      run.actor.stop();
      this.releaseForward(run.step);
    }
    this.running.clear();
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
      tag: `layer ${layer.layerId} mb ${microbatch}`,
    };
  }

  // ---- stages ----

  private compute(s: MoeStep): void {
    const ex = s.layer.compute(s.rt, s.localRows!, s.localCounts!);
    s.expertsCtx = ex.ctx;
    s.yLocal = ex.out;
  }

  private async combine(s: MoeStep): Promise<void> {
    // The combine collective is in flight while the shared expert computes (torchtitan overlaps them too).
    const pending = this.dispatch.combine(s);
    const sh = s.layer.sharedForward(s.rt, s.x, s.N);
    await pending;
    if (sh) {
      s.rt.k.add(s.out!, sh.out, s.out!, s.N * s.D);
      s.rt.pool.release(sh.out);
    }
    s.sharedCtx = sh?.ctx ?? null;
  }

  private async combineGrad(s: MoeStep): Promise<void> {
    const { rt, N, D, K } = s;
    s.dGates = rt.pool.zeros(N * K);
    const pending = this.dispatch.combineGrad(s);
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

  private async dispatchGrad(s: MoeStep): Promise<void> {
    await this.dispatch.dispatchGrad(s);
    s.rt.pool.release(s.dRowsLocal);
    s.dRowsLocal = undefined;
  }

  private routerGrad(s: MoeStep): void {
    const rt = s.rt;
    this.router.routerGrad(s);
    rt.pool.release(s.dGates);
    s.dGates = undefined;
    if (s.perm) releasePermutation(rt, s.perm); // allgather-rs permutes gathered tokens instead of home rows
    s.perm = undefined;
    releaseRoute(rt, s.route!);
    s.route = undefined;
    this.dispatch.release(s);
  }

  private releaseForward(s: MoeStep): void {
    const rt = s.rt;
    if (s.routeCtx) releaseRouteCtx(rt, s.routeCtx);
    if (s.expertsCtx) releaseExpertsCtx(rt, s.expertsCtx);
    if (s.combineCtx) releaseCombineCtx(rt, s.combineCtx);
    if (s.sharedCtx && s.layer.shared) s.layer.shared.release(rt, s.sharedCtx);
    rt.pool.release(s.localRows);
    rt.pool.release(s.yLocal);
    if (s.perm) releasePermutation(rt, s.perm);
    if (s.route) releaseRoute(rt, s.route);
    this.dispatch.release(s);
    s.routeCtx = s.expertsCtx = s.combineCtx = s.localRows = s.yLocal = s.perm = s.route = undefined;
    s.sharedCtx = null;
  }
}

function key(layer: number, microbatch: number): string {
  return `${layer}/${microbatch}`;
}

/**
 * Waits until the machine satisfies `done`, or rejects with the machine's recorded error once it reaches its
 * `failed` state (the stage's collective error: timeout, dead peer, …).
 */
export function settled<A extends Actor<any>>(actor: A, done: (s: any) => boolean, cause?: () => unknown): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const check = (s: any): boolean => {
      if (s.value === 'failed' || (typeof s.matches === 'function' && s.matches('failed'))) {
        reject(cause?.() ?? new Error(s.context?.error ?? 'protocol machine failed'));
        return true;
      }
      if (done(s)) {
        resolve();
        return true;
      }
      return false;
    };
    if (check(actor.getSnapshot())) return;
    const sub = actor.subscribe({
      next: (s) => {
        if (check(s)) sub.unsubscribe();
      },
      error: (e) => reject(e),
    });
  });
}
