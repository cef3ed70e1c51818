// The RankHost: everything one rank runs. It builds the rank's DeviceMesh, its model part (all non-expert units,
// the local experts of its EP shard), the actors — FsdpShard per unit, ExpertShard + Router for the MoE layers,
// Optimizer — and drives one train-step machine per step, whose stages it implements by driving the actors.
//
// Collective ordering: every rank must issue the collectives of a group in the same order. The main path (unshard
// all_gathers, MoE dispatch, norms, counts) issues in program order. Gradient reductions run beside it, so they
// go through their own communicators (same members, separate sequence — as FSDP2 runs them on their own stream)
// and one queue, so they too are issued in program order whatever the timing.

import { kernelsFor, type ParamDtype } from '../tensor/precision.ts';
import { createActor, fromPromise } from 'xstate';
import { sumBytesByGroup } from '../comm/bytes.ts';
import type { ByteCounters, Communicator } from '../comm/communicator.ts';
import { DeviceMesh, groupOf, planMesh, type MeshDim, type ParallelDegrees } from '../comm/mesh.ts';
import type { ResolvedModelConfig } from '../models/config.ts';
import { isCheckpointed, type AcMode } from '../models/model/ac.ts';
import type { BlockPreCtx } from '../models/model/block.ts';
import type { HeadCtx } from '../models/model/head.ts';
import { countValid, Model, type Microbatch } from '../models/model/model.ts';
import type { FeedForward, FfnCtx } from '../models/layers/ffn.ts';
import type { AdamWConfig } from '../models/optim/adamw.ts';
import type { LRScheduler, LRScheduleConfig } from '../models/optim/lr-schedule.ts';
import { loadWeights } from '../models/model/weights.ts';
import { readSafetensors } from '../models/safetensors.ts';
import { blockUnitId, buildModelSpec, expertUnitId, UNIT_EMBED, UNIT_HEAD } from '../models/spec.ts';
import { Allocator } from '../tensor/allocator.ts';
import { ActivationPool } from '../models/pool.ts';
import { getKernels } from '../tensor/kernels.ts';
import type { EventSink } from '../protocols/events.ts';
import { reshardAfterForward, type GradReduce, type ReshardPolicy } from '../protocols/fsdp-unit.machine.ts';
import type { MoeStrategy } from '../protocols/strategies.ts';
import { trainStepMachine, type StepStageInput } from '../protocols/train-step.machine.ts';
import { ExpertShard, settled } from './expert-shard.ts';
import { FsdpUnitShard } from './fsdp-shard.ts';
import { Optimizer } from './optimizer.ts';
import { gatherFullTensors, type FullTensor } from './full-tensors.ts';
import { Router } from './router.ts';
import { StepWatchdog } from './step-watchdog.ts';
import { TraceBridge, type RankPosition } from './trace-bridge.ts';
import type { CommObserver } from '../comm/base-communicator.ts';

export interface RankJob {
  model: ResolvedModelConfig;
  degrees: Partial<ParallelDegrees>;
  /** The planned EP dispatch ('local' when ep = 1). */
  dispatch: MoeStrategy;
  gradReduce: GradReduce;
  /** FSDP gradient divide factor (torchtitan: 1; the loss is divided by the global valid-token count). */
  divideFactor: number;
  reshard: ReshardPolicy;
  ac: AcMode;
  adamw: AdamWConfig;
  schedule: LRScheduleConfig;
  maxNorm: number;
  /** Init seed (ignored when `weights` is given). */
  seed: number;
  /** A full-model safetensors file (torchtitan names) to start from. */
  weights?: string;
  /** BLAS / kernel threads of this rank. */
  threads?: number;
  /** Matmul input dtype ([training] mixed_precision_param); float32 when absent. */
  paramDtype?: ParamDtype;
  /** Gradient reduce_scatter dtype ([training] mixed_precision_reduce); float32 when absent. */
  reduceDtype?: ParamDtype;
  /**
   * A step in which nothing happens — no protocol state entered or left, no collective issued or completed, none in
   * flight — for this long fails with the states every machine is in (0 disables). Collective timeouts cannot see
   * a rank waiting on a dropped protocol event; this does.
   */
  watchdogMs?: number;
}

export interface StepOutcome {
  step: number;
  /** Σ over microbatches of this rank's CE sum / global valid tokens (torchtitan's per-rank loss_report). */
  loss: number;
  /** Σ over the loss group of loss (the global mean loss). */
  globalAvgLoss: number;
  /** max over ranks of the rank's own mean loss. */
  globalMaxLoss: number;
  gradNorm: number;
  lr: number;
  /** Labels this rank loaded (torchtitan counts every position for tps). */
  tokens: number;
  validTokens: number;
  globalValidTokens: number;
}

interface MbState {
  mb: Microbatch;
  inputs: (Float32Array | null)[];
  pre: (BlockPreCtx | null)[];
  ffn: (FfnCtx | null)[];
  head: HeadCtx | null;
  dh: Float32Array | null;
  lossSum: number;
}

/** Reductions run one after another in the order they were kicked off (see the file comment). */
class ReductionQueue {
  private tail: Promise<void> = Promise.resolve();
  run(fn: () => Promise<void>): Promise<void> {
    const p = this.tail.then(fn);
    this.tail = p.catch(() => {});
    return p;
  }
}

export class RankHost {
  readonly position: RankPosition = { step: 0, layer: null, microbatch: null, actor: 'step' };
  /** Always present: it turns transitions and collectives into events for the sink and the progress watchdog. */
  readonly bridge: TraceBridge;
  private readonly watchdog = new StepWatchdog();
  readonly alloc = new Allocator();
  readonly model: Model;
  readonly shards: Map<string, FsdpUnitShard>;
  readonly experts: ExpertShard;
  readonly router = new Router();
  readonly optimizer: Optimizer;
  private stepNo = 0;
  private readonly reductions = new ReductionQueue();
  private readonly machine;
  private pendingReductions: Promise<void>[] = [];

  private constructor(
    readonly mesh: DeviceMesh,
    readonly reduceGroups: { fsdp: Communicator; efsdp: Communicator; replicate: Communicator },
    readonly job: RankJob,
    sink: EventSink | null,
  ) {
    const k = getKernels();
    if (job.threads) k.setNumThreads(job.threads);
    const progress: EventSink = {
      record: (e) => {
        this.watchdog.touch();
        sink?.record(e);
      },
    };
    this.bridge = new TraceBridge(mesh.rank, progress, this.position);
    // Chained, not replaced: a transport or a test may observe the same communicators.
    for (const c of this.communicators()) {
      const comm = c as { observer?: CommObserver };
      comm.observer = chainObservers(comm.observer, this.bridge.commObserver());
    }
    const E = moeExperts(job.model);
    const range = E !== null ? mesh.experts(E) : null;
    this.model = Model.build(job.model, {
      alloc: this.alloc,
      kernels: kernelsFor(k, job.paramDtype ?? 'float32'),
      experts: range ? { start: range.start, count: range.local } : undefined,
      seed: job.weights ? undefined : job.seed,
    });
    if (job.weights) loadWeights(this.model, readSafetensors(job.weights));
    const ep = mesh.get('ep');
    const strategy = ep.size === 1 ? 'local' : job.dispatch;
    this.experts = new ExpertShard(this.model.rt, ep, strategy, this.bridge, this.position, this.router);
    this.shards = new Map();
    const fsdp = mesh.get('fsdp');
    const efsdp = mesh.get('efsdp');
    // One set of step-scoped FSDP buffers for all units of the rank (see FsdpUnitOptions.pools).
    const pools = { params: new ActivationPool(this.alloc, 'params'), grads: new ActivationPool(this.alloc, 'grads'), comm: new ActivationPool(this.alloc, 'comm') };
    for (const [id, unit] of this.model.units) {
      const isExperts = unit.isExperts;
      const layer = /^layers\.(\d+)/.exec(id)?.[1];
      const shard = new FsdpUnitShard(
        {
          unit,
          group: isExperts && ep.size > 1 ? efsdp : fsdp,
          reduceGroup: isExperts && ep.size > 1 ? reduceGroups.efsdp : reduceGroups.fsdp,
          replicate: reduceGroups.replicate,
          reshardAfterForward: reshardAfterForward(job.reshard, { isOutput: id === UNIT_HEAD }),
          gradReduce: job.gradReduce,
          divideFactor: job.divideFactor,
          isExperts,
          layer: layer === undefined ? null : Number(layer),
          queue: (fn) => this.reductions.run(fn),
          pools,
          paramDtype: job.paramDtype,
          reduceDtype: job.reduceDtype,
        },
        this.alloc,
        k,
        this.bridge,
        this.position,
      );
      this.shards.set(id, shard);
    }
    this.optimizer = new Optimizer([...this.shards.values()], job.adamw, job.schedule, k, this.alloc);
    this.machine = trainStepMachine.provide({ actors: this.stageActors() });
  }

  /** Builds the rank: mesh (collective over `world`), model part, actors. */
  static async create(world: Communicator, job: RankJob, sink: EventSink | null = null): Promise<RankHost> {
    const layout = planMesh(job.degrees, world.size, { numExperts: moeExperts(job.model) ?? undefined, seqLen: buildModelSpec(job.model).seqLen });
    const mesh = await DeviceMesh.build(world, layout);
    // Second communicators for the reduction path (see the file comment), split in a fixed order on every rank.
    const again = async (dim: MeshDim, name: string) => {
      const g = groupOf(layout, dim, world.rank);
      return world.split(g.index, g.ranks.indexOf(world.rank), name);
    };
    const reduceGroups = {
      fsdp: await again('fsdp', 'fsdp_reduce'),
      efsdp: await again('efsdp', 'efsdp_reduce'),
      replicate: await again('dp_replicate', 'dp_replicate_reduce'),
    };
    return new RankHost(mesh, reduceGroups, job, sink);
  }

  get scheduler(): LRScheduler {
    return this.optimizer.scheduler;
  }

  get rank(): number {
    return this.mesh.rank;
  }

  /** Every communicator of the rank: the mesh's and the reduction path's (traces and byte counts cover both). */
  communicators(): Communicator[] {
    return [...this.mesh.communicators(), ...Object.values(this.reduceGroups)];
  }

  /** Bytes and calls per group name, including the gradient reductions (fsdp_reduce, efsdp_reduce, …). */
  bytesByGroup(): Record<string, ByteCounters> {
    return sumBytesByGroup(this.communicators());
  }

  /** Runs one optimizer step over this rank's microbatches (the same count on every rank). */
  async step(microbatches: readonly Microbatch[]): Promise<StepOutcome> {
    if (microbatches.length === 0) throw new Error('RankHost.step: no microbatches');
    const stepNo = ++this.stepNo;
    this.position.step = stepNo;
    for (const s of this.shards.values()) s.zeroGradShard();
    const lr = this.scheduler.lr();
    let valid = 0;
    let tokens = 0;
    for (const mb of microbatches) {
      valid += countValid(mb.labels);
      tokens += mb.labels.length;
    }
    const batch = this.mesh.get('batch');
    const gv = new Float64Array([valid]);
    this.position.actor = 'step';
    await batch.allReduce(gv, { op: 'sum' }, { tag: 'global valid tokens' });
    const globalValid = gv[0]!;
    if (!(globalValid > 0)) throw new Error(`step ${stepNo}: no valid labels on any rank (every label is -100)`);
    const states: MbState[] = microbatches.map((mb) => ({
      mb,
      inputs: [],
      pre: [],
      ffn: [],
      head: null,
      dh: null,
      lossSum: 0,
    }));
    this.current = { states, globalValid, lr, gradNorm: 0 };
    const actor = createActor(this.machine, {
      input: { step: stepNo, nLayers: this.model.blocks.length, microbatches: microbatches.length, ac: this.job.ac, biasUpdate: this.hasBiasUpdate() },
      inspect: this.bridge.inspect,
    });
    this.bridge.label(actor, 'trainStep', null, null);
    actor.start();
    actor.send({ type: 'START' });
    const watchdog = this.watch(actor);
    try {
      await Promise.race([settled(actor, (s) => s.status === 'done', () => this.stageError), watchdog.tripped]);
    } catch (e) {
      this.experts.abort();
      throw e;
    } finally {
      watchdog.stop();
      actor.stop();
    }
    this.scheduler.step();
    const loss = states.reduce((a, s) => a + s.lossSum, 0) / globalValid;
    const rep = new Float64Array([loss]);
    const lossGroup = this.mesh.get('loss');
    this.position.actor = 'step';
    await lossGroup.allReduce(rep, { op: 'sum' }, { tag: 'loss report' });
    const mine = new Float64Array([valid > 0 ? (loss * globalValid) / valid : 0]);
    await lossGroup.allReduce(mine, { op: 'max' }, { tag: 'max loss' });
    const out: StepOutcome = {
      step: stepNo,
      loss,
      globalAvgLoss: rep[0]!,
      globalMaxLoss: mine[0]!,
      gradNorm: this.current.gradNorm,
      lr,
      tokens,
      validTokens: valid,
      globalValidTokens: globalValid,
    };
    this.current = null;
    return out;
  }

  /**
   * Forward and backward only (no clipping, no optimizer): the gradients of torchtitan's loss over every rank's
   * microbatches, reduced into the shards. For `moe-actors grad` and parity tests.
   */
  async gradients(microbatches: readonly Microbatch[]): Promise<{ loss: number; globalAvgLoss: number }> {
    const saved = this.noOptimizer;
    this.noOptimizer = true;
    try {
      const r = await this.step(microbatches);
      this.stepNo--;
      return { loss: r.loss, globalAvgLoss: r.globalAvgLoss };
    } finally {
      this.noOptimizer = saved;
    }
  }

  /** The step watchdog: the description names every machine's state (see StepWatchdog). */
  private watch(actor: { getSnapshot(): { value: unknown } }) {
    const recorder = (this.mesh.world as { recorder?: { pending(): unknown } }).recorder;
    return this.watchdog.watch(
      this.job.watchdogMs ?? 0,
      () => !!recorder?.pending(),
      (stillMs) => {
        const units = [...this.shards.values()]
          .map((u) => [u.id, JSON.stringify(u.actor.getSnapshot().value)] as const)
          .filter(([, v]) => v !== '"resharded"')
          .map(([id, v]) => `${id} ${v}`);
        return (
          `rank ${this.rank} made no progress for ${Math.round(stillMs)} ms in step ${this.stepNo} and is not in a collective: ` +
          `train-step in ${JSON.stringify(actor.getSnapshot().value)} (layer ${this.position.layer}, microbatch ${this.position.microbatch})` +
          (units.length ? `; FSDP units not resharded: ${units.join(', ')}` : '') +
          `; moe layers running: ${this.experts.describe() || 'none'}. A protocol event was dropped or a stage never settled.`
        );
      },
    );
  }

  private noOptimizer = false;
  private stageError: unknown = undefined;
  private current: { states: MbState[]; globalValid: number; lr: number; gradNorm: number } | null = null;

  private hasBiasUpdate(): boolean {
    return !this.noOptimizer && this.model.moeLayers().some((m) => m.buffers.expertBias !== null);
  }

  private shard(id: string): FsdpUnitShard {
    return this.shards.get(id)!;
  }

  // ---- the train-step machine's stages ----

  private stageActors() {
    const wrap = (fn: (input: StepStageInput) => Promise<void>) =>
      fromPromise<void, StepStageInput>(async ({ input }) => {
        this.position.actor = 'step';
        this.position.microbatch = input.microbatch;
        try {
          await fn(input);
        } catch (e) {
          this.stageError ??= e;
          throw e;
        }
      });
    return {
      forwardEmbed: wrap((i) => this.forwardEmbed(i)),
      forwardBlock: wrap((i) => this.forwardBlock(i)),
      loss: wrap((i) => this.lossStage(i)),
      recomputeBlock: wrap((i) => this.recomputeBlock(i)),
      backwardBlock: wrap((i) => this.backwardBlock(i)),
      backwardEmbed: wrap((i) => this.backwardEmbed(i)),
      reduceGrads: wrap(() => this.reduceGradsStage()),
      clip: wrap(() => this.clipStage()),
      biasUpdate: wrap(() => this.biasUpdateStage()),
      optimizer: wrap(() => this.optimizerStage()),
    };
  }

  private mbState(i: number): MbState {
    return this.current!.states[i]!;
  }

  private kickReduce(unitId: string): void {
    const p = this.shard(unitId).reduceGrads();
    p.catch(() => {}); // awaited in reduceGrads; an early failure must not be an unhandled rejection
    this.pendingReductions.push(p);
  }

  private async forwardEmbed({ microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    this.position.layer = null;
    const u = this.shard(UNIT_EMBED);
    await u.unshard('forward', microbatch, step);
    st.inputs = [this.model.embed(st.mb.tokens, st.mb.B * st.mb.S)];
    u.forwardDone();
  }

  private async blockUnits(layer: number, purpose: 'forward' | 'backward', microbatch: number, step: number): Promise<FsdpUnitShard[]> {
    const units = [this.shard(blockUnitId(layer))];
    if (this.model.blocks[layer]!.moe) units.push(this.shard(expertUnitId(layer)));
    for (const u of units) await u.unshard(purpose, microbatch, step);
    return units;
  }

  /** Block forward with the FFN in between: the MoE goes through the ExpertShard's machine. */
  private async runBlock(layer: number, st: MbState, pass: 'forward' | 'recompute', step: number, microbatch: number): Promise<Float32Array> {
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    const { B, S } = st.mb;
    const N = B * S;
    this.position.layer = layer;
    const pre = block.forwardPre(rt, st.inputs[layer]!, B, S);
    let ffnOut: Float32Array;
    if (block.moe) {
      ffnOut = await this.experts.forward(block.moe, pre.xn2, N, microbatch, step, pass);
      st.ffn[layer] = null;
    } else {
      const f = (block.ffn as FeedForward).forward(rt, pre.xn2, N);
      ffnOut = f.out;
      st.ffn[layer] = f.ctx;
    }
    this.position.actor = 'step';
    st.pre[layer] = pre;
    return block.forwardPost(rt, pre, ffnOut);
  }

  private dropBlock(layer: number, st: MbState, microbatch: number): void {
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    block.releasePre(rt, st.pre[layer]!);
    st.pre[layer] = null;
    if (block.moe) this.experts.dropForward(layer, microbatch);
    else {
      (block.ffn as FeedForward).release(rt, st.ffn[layer]!);
      st.ffn[layer] = null;
    }
  }

  private async forwardBlock({ layer, microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    this.position.layer = layer;
    const units = await this.blockUnits(layer, 'forward', microbatch, step);
    const out = await this.runBlock(layer, st, 'forward', step, microbatch);
    st.inputs[layer + 1] = out;
    for (const u of units) u.forwardDone();
    if (isCheckpointed(layer, this.job.ac)) this.dropBlock(layer, st, microbatch);
  }

  private async lossStage({ microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    const rt = this.model.rt;
    const L = this.model.blocks.length;
    const N = st.mb.B * st.mb.S;
    this.position.layer = null;
    const u = this.shard(UNIT_HEAD);
    await u.unshard('forward', microbatch, step);
    const scale = this.job.divideFactor / this.current!.globalValid;
    const h = this.model.head.forward(rt, st.inputs[L]!, st.mb.labels, N, scale);
    st.lossSum = h.lossSum;
    u.forwardDone();
    await u.unshard('backward', microbatch, step);
    st.dh = this.model.head.backward(rt, h.ctx);
    rt.pool.release(st.inputs[L]);
    st.inputs[L] = null;
    this.kickReduce(UNIT_HEAD);
  }

  private async recomputeBlock({ layer, microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    this.position.layer = layer;
    await this.blockUnits(layer, 'backward', microbatch, step);
    const out = await this.runBlock(layer, st, 'recompute', step, microbatch);
    this.model.rt.pool.release(out);
  }

  private async backwardBlock({ layer, microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    this.position.layer = layer;
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    await this.blockUnits(layer, 'backward', microbatch, step);
    this.position.layer = layer;
    const dh = st.dh!;
    let dxn2: Float32Array;
    if (block.moe) dxn2 = await this.experts.backward(layer, microbatch, dh);
    else dxn2 = (block.ffn as FeedForward).backward(rt, st.ffn[layer]!, dh);
    this.position.actor = 'step';
    st.ffn[layer] = null;
    const dx = block.backwardPre(rt, st.pre[layer]!, dxn2, dh);
    st.pre[layer] = null;
    rt.pool.release(dxn2);
    rt.pool.release(dh);
    rt.pool.release(st.inputs[layer]);
    st.inputs[layer] = null;
    st.dh = dx;
    this.kickReduce(blockUnitId(layer));
    if (block.moe) this.kickReduce(expertUnitId(layer));
  }

  private async backwardEmbed({ microbatch, step }: StepStageInput): Promise<void> {
    const st = this.mbState(microbatch);
    this.position.layer = null;
    const u = this.shard(UNIT_EMBED);
    await u.unshard('backward', microbatch, step);
    const N = st.mb.B * st.mb.S;
    this.model.embedBackward(st.dh!, st.mb.tokens, N);
    this.model.rt.pool.release(st.dh);
    st.dh = null;
    if (this.model.blocks.length === 0) this.model.rt.pool.release(st.inputs[0]);
    this.kickReduce(UNIT_EMBED);
  }

  private async reduceGradsStage(): Promise<void> {
    const pending = this.pendingReductions;
    this.pendingReductions = [];
    this.position.layer = null;
    await Promise.all(pending);
  }

  private async clipStage(): Promise<void> {
    if (this.noOptimizer) return;
    this.position.actor = 'optimizer';
    this.current!.gradNorm = await this.optimizer.clip(this.mesh.get('fsdp'), this.job.maxNorm);
  }

  private async biasUpdateStage(): Promise<void> {
    this.position.actor = 'optimizer';
    await this.router.updateBiases(this.model.moeLayers(), this.job.ac, this.mesh.get('loss'));
  }

  private async optimizerStage(): Promise<void> {
    if (this.noOptimizer) return;
    this.optimizer.step(this.current!.lr);
  }

  /**
   * Every parameter (or gradient) as a full tensor under its torchtitan name, plus the expert biases (params).
   * Collective: every rank must call it.
   */
  fullTensors(which: 'params' | 'grads'): Promise<Map<string, FullTensor>> {
    this.position.actor = 'step';
    return gatherFullTensors(this.shards.values(), this.mesh.get('ep'), which === 'params' ? this.model.moeBuffers : null, which);
  }

  /** Stops the actors and frees the mesh's and the reduction path's communicators. */
  async close(): Promise<void> {
    for (const s of this.shards.values()) s.stop();
    this.experts.abort();
    await this.mesh.free();
    for (const c of Object.values(this.reduceGroups)) await c.free();
  }
}

/** The routed-expert count of the model's MoE layers (null for a dense model). */
export function moeExperts(cfg: ResolvedModelConfig): number | null {
  for (const b of buildModelSpec(cfg).blocks) if (b.ffn.kind === 'moe') return b.ffn.args.num_experts;
  return null;
}

function chainObservers(a: CommObserver | undefined, b: CommObserver): CommObserver {
  if (!a) return b;
  return {
    onStart: (c, e) => {
      a.onStart?.(c, e);
      b.onStart?.(c, e);
    },
    onEnd: (c, e) => {
      a.onEnd?.(c, e);
      b.onEnd?.(c, e);
    },
  };
}
