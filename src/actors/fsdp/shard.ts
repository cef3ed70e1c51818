// The FSDP unit actor (`fsdp:<unit>`) of a rank: for its parameter unit it owns the flat parameter shard (1/P of the unit,
// padded so every rank's shard has the same length), the gradient shard that accumulates over microbatches, and
// — while the unit is unsharded — the full flat buffers the layers compute on. It implements the fsdp-unit
// machine's stages: unshard (all_gather), reshard (free), reduce (reduce_scatter; SUM then divide or PREMUL_SUM;
// HSDP all_reduce across replicas). The shard (buffers) lives as long as the rank; its machine is spawned under
// each step's root (see protocols/train-step.machine.ts) and reached through the actor system.

import { fromPromise, type ActorRefFrom } from 'xstate';
import type { ParamDtype } from '../../tensor/precision.ts';
import type { CallSite, Communicator, ReduceOp } from '../../comm/communicator.ts';
import type { FlatParams, ParamUnit } from '../../models/params/unit.ts';
import type { Allocator } from '../../tensor/allocator.ts';
import type { ActivationPool } from '../../models/pool.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import {
  fsdpUnitMachine,
  type FsdpStageInput,
  type FsdpUnitInput,
  type GradReduce,
} from '../../protocols/fsdp-unit.machine.ts';
import { siteOf } from '../call-site.ts';
import { ask, type StepFailure } from '../wait.ts';

/** The unit's machine as spawned in the step's actor system. */
export type FsdpUnitRef = ActorRefFrom<typeof fsdpUnitMachine>;

export interface FsdpUnitOptions {
  unit: ParamUnit;
  /** The group the unit is sharded over (fsdp, or efsdp for routed experts): unshard all_gathers. */
  group: Communicator;
  /** Same members as `group`, its own sequence: the reduction path's reduce_scatters. */
  reduceGroup: Communicator;
  /** HSDP replicas (size 1: plain FSDP), reduction path. */
  replicate: Communicator;
  /** Runs the unit's reduction after every reduction kicked off before it (program order on every rank). */
  queue: (fn: () => Promise<void>) => Promise<void>;
  reshardAfterForward: boolean;
  gradReduce: GradReduce;
  /** The gradient divide factor of 'sum-divide' / 'premul-sum' (1: torchtitan's plain sum). */
  divideFactor: number;
  /** Routed experts (their norm counts in the EP group of clipping). */
  isExperts: boolean;
  /** Layer id, for traces (null: embedding / head). */
  layer: number | null;
  /**
   * Where the step-scoped buffers come from: the unsharded parameters (all_gather target), the full gradients and
   * the reduce_scatter output. A rank's units share these pools, so a buffer released by one unit's reshard serves
   * the next unit's unshard instead of a fresh allocation (accounting: live while a unit holds it, reserved idle).
   * Without pools every buffer is a fresh tracked allocation.
   */
  pools?: { params: ActivationPool; grads: ActivationPool; comm: ActivationPool };
  /**
   * The all_gather dtype (FSDP2's param_dtype): bfloat16 sends the shard rounded to bf16 (2 bytes per element) and
   * widens the gathered parameters for compute; the shard itself (master weights) stays f32. Default float32.
   */
  paramDtype?: ParamDtype;
  /**
   * The gradient reduce_scatter dtype (FSDP2's reduce_dtype): bfloat16 sends the full gradient rounded to bf16 and
   * gets back the f32-accumulated, once-rounded bf16 sum of the shard (premul_sum's factor applied in f32 before
   * rounding). The HSDP replica all_reduce stays f32. Default float32.
   */
  reduceDtype?: ParamDtype;
}

export class FsdpUnitShard implements FlatParams {
  readonly unit: ParamUnit;
  readonly group: Communicator;
  readonly replicate: Communicator;
  readonly isExperts: boolean;
  readonly layer: number | null;
  /** Elements per rank's shard; the padded full length is shardSize · group.size. */
  readonly shardSize: number;
  readonly paramShard: Float32Array;
  readonly gradShard: Float32Array;
  private full: Float32Array | null = null;
  private fullGrad: Float32Array | null = null;
  private reduced: Float32Array | null = null;
  /** The unit machine's input (the machine is spawned per step by the train-step root as `fsdp:<unit>`). */
  readonly input: FsdpUnitInput;
  private readonly opts: FsdpUnitOptions;
  /** With one rank and no replicas the shard *is* the unit: compute on it directly, no copies. */
  private readonly trivial: boolean;

  constructor(
    opts: FsdpUnitOptions,
    private readonly alloc: Allocator,
    private readonly k: Kernels,
    private readonly failure: StepFailure,
  ) {
    this.opts = opts;
    this.unit = opts.unit;
    this.group = opts.group;
    this.replicate = opts.replicate;
    this.isExperts = opts.isExperts;
    this.layer = opts.layer;
    const P = opts.group.size;
    const n = opts.unit.layout.numel;
    this.shardSize = Math.ceil(n / P);
    this.trivial = P === 1 && opts.replicate.size === 1 && opts.gradReduce === 'sum';
    if (this.trivial) {
      this.paramShard = opts.unit.data;
      this.gradShard = opts.unit.grad;
    } else {
      // The unit's own (full) storage holds the initial weights; keep this rank's slice and let the rest go. Where peers
      // read shared memory in place (threads), the shard lives on a SharedArrayBuffer: the unshard all_gather's peers then read it in
      // place instead of through the sender's arena slot (one copy less per element).
      const shared = opts.group.peerReadsInPlace;
      this.paramShard = shared ? alloc.sharedF32('params', this.shardSize) : alloc.f32('params', this.shardSize);
      const r = opts.group.rank;
      this.paramShard.set(opts.unit.data.subarray(r * this.shardSize, Math.min(n, (r + 1) * this.shardSize)));
      this.gradShard = alloc.f32('grads', this.shardSize);
      opts.unit.free();
      opts.unit.detach();
    }
    this.input = {
      unit: opts.unit.id,
      reshardAfterForward: opts.reshardAfterForward,
      hsdp: opts.replicate.size > 1,
      gradReduce: opts.gradReduce,
    };
  }

  // FlatParams: what the optimizer and clipping see is this rank's shard.
  get id(): string {
    return this.unit.id;
  }
  get data(): Float32Array {
    return this.paramShard;
  }
  get grad(): Float32Array {
    return this.gradShard;
  }
  get numel(): number {
    return this.shardSize;
  }

  /** Makes the full parameters available for forward (or, with a zeroed full gradient, for backward). */
  async unshard(actor: FsdpUnitRef, purpose: 'forward' | 'backward', microbatch: number, step: number): Promise<void> {
    // A unit that is not sharded (one rank, plain SUM) has nothing to gather: no request at all.
    if (this.trivial) return;
    // Asked at once, even while the unit reshards or still holds / reduces the previous microbatch's gradients: the
    // machine queues the UNSHARD until its reshard is done and answers UNSHARDED (or FSDP_FAILED) then.
    await ask(
      (replyTo) => actor.send({ type: 'UNSHARD', purpose, microbatch, step, replyTo }),
      'UNSHARDED',
      'FSDP_FAILED',
      this.failure,
      { who: `${purpose} mb ${microbatch}`, whom: `fsdp:${this.unit.id} UNSHARDED` },
    );
    if (purpose === 'backward' && !this.fullGrad) {
      const n = this.shardSize * this.group.size;
      this.fullGrad = this.opts.pools ? this.opts.pools.grads.zeros(n) : this.alloc.f32('grads', n);
      this.unit.attach({ grad: this.fullGrad });
    }
  }

  /** Forward is done with the unit: the reshard-after-forward policy applies. */
  forwardDone(actor: FsdpUnitRef): void {
    if (this.trivial) return;
    actor.send({ type: 'FORWARD_DONE' });
  }

  /**
   * Backward has produced the unit's full gradients: reduce them into the shard. Returns at once with the
   * reduction in flight (it overlaps the next block's backward); the promise settles when it is done.
   */
  reduceGrads(actor: FsdpUnitRef): Promise<void> {
    if (this.trivial) return Promise.resolve();
    // The reduction queue issues GRADS_READY in program order (the same on every rank: collectives must match);
    // the unit answers REDUCED once the reduction and its reshard are done.
    return this.opts.queue(async () => {
      await ask((replyTo) => actor.send({ type: 'GRADS_READY', replyTo }), 'REDUCED', 'FSDP_FAILED', this.failure, {
        who: 'the gradient reduction queue',
        whom: `fsdp:${this.unit.id} REDUCED`,
      });
    });
  }

  zeroGradShard(): void {
    this.gradShard.fill(0);
  }

  // ---- stages (provided to the unit's machine by provideFsdpUnit) ----

  async unshardStage(site: CallSite): Promise<void> {
    const P = this.group.size;
    if (!this.full) {
      // Every element is written by the all_gather: a pooled buffer needs no zeroing.
      const full = this.opts.pools
        ? this.opts.pools.params.get(this.shardSize * P)
        : this.alloc.f32('params', this.shardSize * P);
      if (this.opts.paramDtype === 'bfloat16') await this.allGatherBf16(full, site);
      else await this.group.allGather(this.paramShard, full, { tag: `unshard ${this.unit.id}`, site });
      this.full = full;
      this.unit.attach({ data: full });
    }
  }

  private async allGatherBf16(full: Float32Array, site: CallSite): Promise<void> {
    const n = this.shardSize;
    const send = new Uint16Array(n);
    const recv = new Uint16Array(n * this.group.size);
    this.k.toBf16(this.paramShard, send, n);
    await this.group.allGather(send, recv, { tag: `unshard ${this.unit.id}`, site });
    this.k.fromBf16(recv, full, recv.length);
  }

  reshardStage(): void {
    this.unit.detach();
    if (this.opts.pools) this.opts.pools.params.release(this.full);
    else this.alloc.free(this.full ?? undefined);
    this.full = null;
  }

  async reduceScatterStage(site: CallSite): Promise<void> {
    const grad = this.fullGrad;
    if (!grad) throw new Error(`unit ${this.unit.id}: reduce without gradients (backward did not unshard it)`);
    const f = this.opts.divideFactor;
    const op: ReduceOp = this.opts.gradReduce === 'premul-sum' ? { op: 'premul_sum', factor: 1 / f } : { op: 'sum' };
    const out = this.opts.pools ? this.opts.pools.comm.get(this.shardSize) : this.alloc.f32('comm', this.shardSize);
    if (this.opts.reduceDtype === 'bfloat16') await this.reduceScatterBf16(grad, out, op, site);
    else await this.opts.reduceGroup.reduceScatter(grad, out, op, { tag: `reduce ${this.unit.id}`, site });
    if (this.opts.pools) this.opts.pools.grads.release(grad);
    else this.alloc.free(grad);
    this.fullGrad = null;
    this.reduced = out;
  }

  private async reduceScatterBf16(grad: Float32Array, out: Float32Array, op: ReduceOp, site: CallSite): Promise<void> {
    const n = grad.length;
    if (op.op === 'premul_sum') this.k.scale(grad, op.factor, n);
    const send = new Uint16Array(n);
    const recv = new Uint16Array(this.shardSize);
    this.k.toBf16(grad, send, n);
    await this.opts.reduceGroup.reduceScatter(send, recv, { op: 'sum' }, { tag: `reduce ${this.unit.id}`, site });
    this.k.fromBf16(recv, out, this.shardSize);
  }

  async allReduceStage(site: CallSite): Promise<void> {
    await this.replicate.allReduce(this.reduced!, { op: 'sum' }, { tag: `replicas ${this.unit.id}`, site });
  }

  divideStage(): void {
    this.k.scale(this.reduced!, 1 / this.opts.divideFactor, this.shardSize);
  }

  /**
   * Gradient accumulation over microbatches happens on the shard, as FSDP2 does. It runs on entering the
   * machine's `reduced` state, so no reduce stage has to work out whether it is the last one.
   */
  accumulate(): void {
    this.k.add(this.gradShard, this.reduced!, this.gradShard, this.shardSize);
    if (this.opts.pools) this.opts.pools.comm.release(this.reduced);
    else this.alloc.free(this.reduced!);
    this.reduced = null;
  }
}

/**
 * The fsdp-unit machine every `fsdp:<unit>` actor runs, its stages provided by the unit's shard (the machine's
 * input names the unit).
 */
export function provideFsdpUnit(shards: ReadonlyMap<string, FsdpUnitShard>, failure: StepFailure) {
  const of = (unit: string) => {
    const s = shards.get(unit);
    if (!s) throw new Error(`fsdp unit ${unit}: no shard on this rank`);
    return s;
  };
  const stage = (fn: (s: FsdpUnitShard, site: CallSite) => Promise<void> | void) =>
    fromPromise<void, FsdpStageInput>(async ({ input }) => {
      const s = of(input.unit);
      try {
        await fn(s, siteOf('fsdp', 'fsdpUnit', { ...input, layer: s.layer }));
      } catch (e) {
        failure.first ??= e;
        throw e;
      }
    });
  return fsdpUnitMachine.provide({
    actions: { accumulate: ({ context }) => of(context.unit).accumulate() },
    actors: {
      unshard: stage((s, site) => s.unshardStage(site)),
      reshard: stage((s) => s.reshardStage()),
      reduceScatter: stage((s, site) => s.reduceScatterStage(site)),
      allReduceReplicas: stage((s, site) => s.allReduceStage(site)),
      divide: stage((s) => s.divideStage()),
    },
  });
}
