// The RankHost: the wiring of everything one rank runs. It builds the rank's DeviceMesh, its model part (all
// non-expert units, the local experts of its EP shard) and the actors' implementations — one folder per actor
// kind beside its machine's `.provide`: fsdp/ (an FSDP unit shard per unit), expert/ (the expert shard and its
// EP dispatch strategies), router/, optimizer/, train-step/ (the step's stages) — and runs one actor system per
// step: the train-step machine is the root and spawns the router, expert, optimizer and `fsdp:<unit>` actors.
//
// Collective ordering: every rank must issue the collectives of a group in the same order. The main path (unshard
// all_gathers, MoE dispatch, norms, counts) issues in program order. Gradient reductions run beside it, so they
// go through their own communicators (same members, separate sequence — as FSDP2 runs them on their own stream)
// and one queue, so they too are issued in program order whatever the timing.

import { kernelsFor, type ParamDtype } from '../tensor/precision.ts';
import { createActor, type Actor } from 'xstate';
import { sumBytesByGroup } from '../comm/bytes.ts';
import type { ByteCounters, Communicator } from '../comm/communicator.ts';
import { DeviceMesh, groupOf, planMesh, type MeshDim, type ParallelDegrees } from '../comm/mesh.ts';
import type { ResolvedModelConfig } from '../models/config.ts';
import type { AcMode } from '../models/model/ac.ts';
import { countValid, Model, type Microbatch } from '../models/model/model.ts';
import type { AdamWConfig } from '../models/optim/adamw.ts';
import type { LRScheduler, LRScheduleConfig } from '../models/optim/lr-schedule.ts';
import { loadWeights } from '../models/model/weights.ts';
import { readSafetensors } from '../models/safetensors.ts';
import { buildModelSpec, UNIT_HEAD } from '../models/spec.ts';
import { Allocator } from '../tensor/allocator.ts';
import { ActivationPool } from '../models/pool.ts';
import { getKernels } from '../tensor/kernels.ts';
import type { EventSink } from '../protocols/events.ts';
import { reshardAfterForward, type GradReduce, type ReshardPolicy } from '../protocols/fsdp-unit.machine.ts';
import type { MoeStrategy } from '../protocols/strategies.ts';
import { fsdpActorId } from '../protocols/train-step.machine.ts';
import { siteOf } from './call-site.ts';
import { ExpertShard, type ExpertRef } from './expert/shard.ts';
import { FsdpUnitShard, provideFsdpUnit } from './fsdp/shard.ts';
import { Optimizer } from './optimizer/optimizer.ts';
import { gatherFullTensors, type FullTensor } from './full-tensors.ts';
import { Router } from './router/router.ts';
import { StepWatchdog } from './step-watchdog.ts';
import { TraceBridge, type ActorLabel } from './trace-bridge.ts';
import { newStepRecord, StepStages, type StepRecord } from './train-step/stages.ts';
import { until, type StepFailure } from './wait.ts';

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
  /** The first error of the running step's stages (machines keep only its message). */
  private readonly failure: StepFailure = { first: undefined };
  private readonly stages: StepStages;
  private readonly machine;
  private current: StepRecord | null = null;

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
    this.bridge = new TraceBridge(mesh.rank, progress);
    const observer = this.bridge.commObserver();
    for (const c of this.communicators()) c.observe(observer);
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
    this.experts = new ExpertShard(this.model.rt, ep, strategy, this.failure);
    this.shards = new Map();
    const fsdp = mesh.get('fsdp');
    const efsdp = mesh.get('efsdp');
    // One set of step-scoped FSDP buffers for all units of the rank (see FsdpUnitOptions.pools).
    const pools = {
      params: new ActivationPool(this.alloc, 'params'),
      grads: new ActivationPool(this.alloc, 'grads'),
      comm: new ActivationPool(this.alloc, 'comm'),
    };
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
        this.failure,
      );
      this.shards.set(id, shard);
    }
    this.optimizer = new Optimizer([...this.shards.values()], job.adamw, job.schedule, k, this.alloc);
    this.stages = new StepStages({
      model: this.model,
      shards: this.shards,
      experts: this.experts,
      divideFactor: job.divideFactor,
      failure: this.failure,
      current: () => this.current!,
    });
    this.machine = this.stages.machine({
      router: this.router.machine({
        records: (h) => this.experts.record(h),
        layers: () => this.model.moeLayers(),
        ac: job.ac,
        loss: mesh.get('loss'),
        failure: this.failure,
      }),
      optimizer: this.optimizer.machine(fsdp, this.failure),
      expert: this.experts.machine,
      fsdpUnit: provideFsdpUnit(this.shards, this.failure),
    });
    this.bridge.labeler = (ref) => this.labelOf(ref);
  }

  /** Builds the rank: mesh (collective over `world`), model part, actors. */
  static async create(world: Communicator, job: RankJob, sink: EventSink | null = null): Promise<RankHost> {
    const layout = planMesh(job.degrees, world.size, {
      numExperts: moeExperts(job.model) ?? undefined,
      seqLen: buildModelSpec(job.model).seqLen,
    });
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
  step(microbatches: readonly Microbatch[]): Promise<StepOutcome> {
    return this.run(microbatches, false);
  }

  /**
   * Forward and backward only (no clipping, no optimizer, no LR step): the gradients of torchtitan's loss over
   * every rank's microbatches, reduced into the shards. For `moe-actors grad` and parity tests.
   */
  async gradients(microbatches: readonly Microbatch[]): Promise<{ loss: number; globalAvgLoss: number }> {
    const r = await this.run(microbatches, true);
    return { loss: r.loss, globalAvgLoss: r.globalAvgLoss };
  }

  private async run(microbatches: readonly Microbatch[], gradOnly: boolean): Promise<StepOutcome> {
    if (microbatches.length === 0) throw new Error('RankHost.step: no microbatches');
    // Grad-only passes are not optimizer steps: they take the number the next step would have, without using it up.
    const stepNo = this.stepNo + 1;
    if (!gradOnly) this.stepNo = stepNo;
    this.bridge.step = stepNo;
    const at = (state: string) => siteOf('step', 'rankHost', { state, step: stepNo });
    const lr = this.scheduler.lr();
    let valid = 0;
    let tokens = 0;
    for (const mb of microbatches) {
      valid += countValid(mb.labels);
      tokens += mb.labels.length;
    }
    const batch = this.mesh.get('batch');
    const gv = new Float64Array([valid]);
    await batch.allReduce(gv, { op: 'sum' }, { tag: 'global valid tokens', site: at('start') });
    const globalValid = gv[0]!;
    if (!(globalValid > 0)) throw new Error(`step ${stepNo}: no valid labels on any rank (every label is -100)`);
    this.current = newStepRecord(microbatches, globalValid);
    this.failure.first = undefined;
    const actor = createActor(this.machine, {
      input: {
        step: stepNo,
        nLayers: this.model.blocks.length,
        microbatches: microbatches.length,
        ac: this.job.ac,
        biasUpdate: this.model.moeLayers().some((m) => m.buffers.expertBias !== null),
        gradOnly,
        units: [...this.shards.values()].map((s) => s.input),
        strategy: this.experts.strategy,
        lr,
        maxNorm: this.job.maxNorm,
      },
      inspect: this.bridge.inspect,
    });
    this.bridge.label(actor, { machine: 'trainStep', step: stepNo, layer: null, microbatch: null });
    actor.start();
    actor.send({ type: 'START' });
    const watchdog = this.watch(actor, stepNo);
    let gradNorm = 0;
    try {
      await Promise.race([until(actor, (s) => s.status === 'done', this.failure), watchdog.tripped]);
      gradNorm = actor.getSnapshot().context.gradNorm ?? 0; // grad-only steps do not clip
    } catch (e) {
      // The machine fails (unless a stage failed it already: `failed` has aborted the layers then) and aborts the
      // running MoE layers on its way, whose exit actions release their buffers; a stopped actor would run none.
      if (actor.getSnapshot().status === 'active') actor.send({ type: 'ABORT' });
      this.stages.reset();
      throw e;
    } finally {
      watchdog.stop();
      actor.stop();
    }
    if (!gradOnly) this.scheduler.step();
    const states = this.current.states;
    const loss = states.reduce((a, s) => a + s.lossSum, 0) / globalValid;
    const rep = new Float64Array([loss]);
    const lossGroup = this.mesh.get('loss');
    await lossGroup.allReduce(rep, { op: 'sum' }, { tag: 'loss report', site: at('report') });
    const mine = new Float64Array([valid > 0 ? (loss * globalValid) / valid : 0]);
    await lossGroup.allReduce(mine, { op: 'max' }, { tag: 'max loss', site: at('report') });
    const out: StepOutcome = {
      step: stepNo,
      loss,
      globalAvgLoss: rep[0]!,
      globalMaxLoss: mine[0]!,
      gradNorm,
      lr,
      tokens,
      validTokens: valid,
      globalValidTokens: globalValid,
    };
    this.current = null;
    return out;
  }

  /** Trace labels of the actors the step's root spawns (their state events carry them). */
  private labelOf(ref: { id: string }): ActorLabel | undefined {
    const step = this.bridge.step;
    if (ref.id.startsWith('fsdp:'))
      return { machine: 'fsdpUnit', step, layer: this.shards.get(ref.id.slice(5))?.layer ?? null, microbatch: null };
    const moe = /^moe:(\d+)\/(\d+)$/.exec(ref.id);
    if (moe) return { machine: 'moeLayer', step, layer: Number(moe[1]), microbatch: Number(moe[2]) };
    return undefined;
  }

  /** The step watchdog: the description names every machine's state (see StepWatchdog). */
  private watch(actor: Actor<typeof this.machine>, stepNo: number) {
    const recorder = this.mesh.world.recorder;
    return this.watchdog.watch(
      this.job.watchdogMs ?? 0,
      () => !!recorder.pending(),
      (stillMs) => {
        const snap = actor.getSnapshot();
        const units = [...this.shards.keys()]
          .map((id) => [id, JSON.stringify(actor.system.get(fsdpActorId(id))?.getSnapshot().value)] as const)
          .filter(([, v]) => v !== '"resharded"')
          .map(([id, v]) => `${id} ${v}`);
        return (
          `rank ${this.rank} made no progress for ${Math.round(stillMs)} ms in step ${stepNo} and is not in a collective: ` +
          `train-step in ${JSON.stringify(snap.value)} (layer ${snap.context.layer}, microbatch ${snap.context.microbatch})` +
          (units.length ? `; FSDP units not resharded: ${units.join(', ')}` : '') +
          `; moe layers running: ${this.experts.describe(actor.system.get('expert') as ExpertRef | undefined) || 'none'}. A protocol event was dropped or a stage never settled.`
        );
      },
    );
  }

  /**
   * Every parameter (or gradient) as a full tensor under its torchtitan name, plus the expert biases (params).
   * Collective: every rank must call it.
   */
  fullTensors(which: 'params' | 'grads'): Promise<Map<string, FullTensor>> {
    const site = siteOf('step', 'rankHost', { state: `gather ${which}`, step: this.bridge.step });
    return gatherFullTensors(
      this.shards.values(),
      this.mesh.get('ep'),
      which === 'params' ? this.model.moeBuffers : null,
      which,
      site,
    );
  }

  /** Frees the mesh's and the reduction path's communicators (a failed step has released its layers already). */
  async close(): Promise<void> {
    await this.mesh.free();
    for (const c of Object.values(this.reduceGroups)) await c.free();
  }
}

/** The routed-expert count of the model's MoE layers (null for a dense model). */
export function moeExperts(cfg: ResolvedModelConfig): number | null {
  for (const b of buildModelSpec(cfg).blocks) if (b.ffn.kind === 'moe') return b.ffn.args.num_experts;
  return null;
}
