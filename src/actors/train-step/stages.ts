// The train-step machine's stages on one rank (protocols/train-step.machine.ts): embedding, blocks, loss, their
// the wait for the gradient reductions. A block stage asks the block's FSDP units (`fsdp:<unit>` actors) to
// unshard, runs the block and, for an MoE block, asks the expert shard (`expert`) for the layer's forward /
// backward — each a request answered to the stage's reply inbox; backward kicks off each unit's gradient reduction. Every actor is reached through the step's actor system. (Zeroing, clipping, the bias update
// and the optimizer step are no stages: the machine sends those requests to `optimizer` / `router` itself.)

import { fromPromise, type AnyActorRef } from 'xstate';
import { type BlockPreCtx, moeInput } from '../../models/model/block.ts';
import type { HeadCtx } from '../../models/model/head.ts';
import type { Model, Microbatch } from '../../models/model/model.ts';
import type { FeedForward, FfnCtx } from '../../models/layers/ffn.ts';
import { blockUnitId, expertUnitId, UNIT_EMBED, UNIT_HEAD } from '../../models/spec.ts';
import type { expertMachine } from '../../protocols/expert.machine.ts';
import type { fsdpUnitMachine } from '../../protocols/fsdp-unit.machine.ts';
import type { optimizerMachine } from '../../protocols/optimizer.machine.ts';
import type { routerMachine } from '../../protocols/router.machine.ts';
import { fsdpActorId, trainStepMachine, type StepStageInput } from '../../protocols/train-step.machine.ts';
import type { ExpertRef, ExpertShard } from '../expert/shard.ts';
import type { FsdpUnitRef, FsdpUnitShard } from '../fsdp/shard.ts';
import type { StepFailure } from '../wait.ts';

/** One microbatch's activations between its stages. */
interface MbState {
  mb: Microbatch;
  inputs: (Float32Array | null)[];
  pre: (BlockPreCtx | null)[];
  ffn: (FfnCtx | null)[];
  head: HeadCtx | null;
  dh: Float32Array | null;
  lossSum: number;
}

/** What one step's stages share: the microbatches' activations and the loss normaliser. */
export interface StepRecord {
  states: MbState[];
  globalValid: number;
}

export function newStepRecord(microbatches: readonly Microbatch[], globalValid: number): StepRecord {
  const states = microbatches.map((mb) => ({ mb, inputs: [], pre: [], ffn: [], head: null, dh: null, lossSum: 0 }));
  return { states, globalValid };
}

interface System {
  get(id: string): AnyActorRef | undefined;
}

export interface StageWiring {
  model: Model;
  shards: ReadonlyMap<string, FsdpUnitShard>;
  experts: ExpertShard;
  divideFactor: number;
  failure: StepFailure;
  /** The step being run (set before the machine starts, cleared after). */
  current: () => StepRecord;
}

export class StepStages {
  private pendingReductions: Promise<void>[] = [];

  constructor(private readonly w: StageWiring) {}

  /**
   * The train-step machine of the rank: these stages, and the machines of the children it spawns (each provided
   * by its actor's own folder).
   */
  machine(children: {
    router: typeof routerMachine;
    optimizer: typeof optimizerMachine;
    expert: typeof expertMachine;
    fsdpUnit: typeof fsdpUnitMachine;
  }) {
    return trainStepMachine.provide({
      actors: {
        ...this.actors(),
        routerActor: children.router,
        optimizerActor: children.optimizer,
        expertActor: children.expert,
        fsdpUnitActor: children.fsdpUnit,
      },
    });
  }

  /** The train-step machine's stage implementations. */
  actors() {
    const wrap = (fn: (input: StepStageInput, system: System) => Promise<void>) =>
      fromPromise<void, StepStageInput>(async ({ input, system }) => {
        try {
          await fn(input, system);
        } catch (e) {
          this.w.failure.first ??= e;
          throw e;
        }
      });
    return {
      forwardEmbed: wrap((i, sys) => this.forwardEmbed(i, sys)),
      forwardBlock: wrap((i, sys) => this.forwardBlock(i, sys)),
      loss: wrap((i, sys) => this.lossStage(i, sys)),
      recomputeBlock: wrap((i, sys) => this.recomputeBlock(i, sys)),
      backwardBlock: wrap((i, sys) => this.backwardBlock(i, sys)),
      backwardEmbed: wrap((i, sys) => this.backwardEmbed(i, sys)),
      reduceGrads: wrap(() => this.reduceGradsStage()),
    } satisfies Partial<Record<keyof typeof trainStepMachine.implementations.actors, unknown>>;
  }

  /** A failed step: reductions still in flight are not waited for. */
  reset(): void {
    this.pendingReductions = [];
  }

  private get model(): Model {
    return this.w.model;
  }

  private mbState(i: number): MbState {
    return this.w.current().states[i]!;
  }

  private unit(sys: System, id: string): { shard: FsdpUnitShard; ref: FsdpUnitRef } {
    const ref = sys.get(fsdpActorId(id));
    if (!ref) throw new Error(`no actor ${fsdpActorId(id)} in the step's actor system`);
    return { shard: this.w.shards.get(id)!, ref: ref as FsdpUnitRef };
  }

  private actor(sys: System, id: 'expert'): AnyActorRef {
    const ref = sys.get(id);
    if (!ref) throw new Error(`no actor ${id} in the step's actor system`);
    return ref;
  }

  private kickReduce(sys: System, unitId: string): void {
    const u = this.unit(sys, unitId);
    const p = u.shard.reduceGrads(u.ref);
    p.catch(() => {}); // awaited in reduceGrads; an early failure must not be an unhandled rejection
    this.pendingReductions.push(p);
  }

  private async forwardEmbed({ microbatch, step }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    const u = this.unit(sys, UNIT_EMBED);
    await u.shard.unshard(u.ref, 'forward', microbatch, step);
    st.inputs = [this.model.embed(st.mb.tokens, st.mb.B * st.mb.S)];
    u.shard.forwardDone(u.ref);
  }

  private async blockUnits(
    sys: System,
    layer: number,
    purpose: 'forward' | 'backward',
    microbatch: number,
    step: number,
  ) {
    const units = [this.unit(sys, blockUnitId(layer))];
    if (this.model.blocks[layer]!.moe) units.push(this.unit(sys, expertUnitId(layer)));
    for (const u of units) await u.shard.unshard(u.ref, purpose, microbatch, step);
    return units;
  }

  /** Block forward with the FFN in between: the MoE goes through the expert shard's moe-layer machine. */
  private async runBlock(
    sys: System,
    layer: number,
    st: MbState,
    pass: 'forward' | 'recompute',
    microbatch: number,
  ): Promise<Float32Array> {
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    const { B, S } = st.mb;
    const N = B * S;
    const pre = block.forwardPre(rt, st.inputs[layer]!, B, S);
    let ffnOut: Float32Array;
    if (block.moe) {
      ffnOut = await this.w.experts.forward(
        this.actor(sys, 'expert') as ExpertRef,
        block.moe,
        moeInput(pre),
        N,
        microbatch,
        pass,
      );
      st.ffn[layer] = null;
    } else {
      const f = (block.ffn as FeedForward).forward(rt, pre.xn2, N);
      ffnOut = f.out;
      st.ffn[layer] = f.ctx;
    }
    st.pre[layer] = pre;
    return block.forwardPost(rt, pre, ffnOut);
  }

  private dropBlock(sys: System, layer: number, st: MbState, microbatch: number): void {
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    block.releasePre(rt, st.pre[layer]!);
    st.pre[layer] = null;
    if (block.moe) this.w.experts.dropForward(this.actor(sys, 'expert') as ExpertRef, layer, microbatch);
    else {
      (block.ffn as FeedForward).release(rt, st.ffn[layer]!);
      st.ffn[layer] = null;
    }
  }

  private async forwardBlock({ layer, microbatch, step, checkpointed }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    const units = await this.blockUnits(sys, layer, 'forward', microbatch, step);
    const out = await this.runBlock(sys, layer, st, 'forward', microbatch);
    st.inputs[layer + 1] = out;
    for (const u of units) u.shard.forwardDone(u.ref);
    // The machine recomputes this block before its backward: what the forward kept goes now.
    if (checkpointed) this.dropBlock(sys, layer, st, microbatch);
  }

  private async lossStage({ microbatch, step }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    const rt = this.model.rt;
    const L = this.model.blocks.length;
    const N = st.mb.B * st.mb.S;
    const u = this.unit(sys, UNIT_HEAD);
    await u.shard.unshard(u.ref, 'forward', microbatch, step);
    const scale = this.w.divideFactor / this.w.current().globalValid;
    const h = this.model.head.forward(rt, st.inputs[L]!, st.mb.labels, N, scale);
    st.lossSum = h.lossSum;
    u.shard.forwardDone(u.ref);
    await u.shard.unshard(u.ref, 'backward', microbatch, step);
    st.dh = this.model.head.backward(rt, h.ctx);
    rt.pool.release(st.inputs[L]);
    st.inputs[L] = null;
    this.kickReduce(sys, UNIT_HEAD);
  }

  private async recomputeBlock({ layer, microbatch, step }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    await this.blockUnits(sys, layer, 'backward', microbatch, step);
    const out = await this.runBlock(sys, layer, st, 'recompute', microbatch);
    this.model.rt.pool.release(out);
  }

  private async backwardBlock({ layer, microbatch, step }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    const block = this.model.blocks[layer]!;
    const rt = this.model.rt;
    await this.blockUnits(sys, layer, 'backward', microbatch, step);
    const dh = st.dh!;
    let dxn2: Float32Array;
    if (block.moe) dxn2 = await this.w.experts.backward(this.actor(sys, 'expert') as ExpertRef, layer, microbatch, dh);
    else dxn2 = (block.ffn as FeedForward).backward(rt, st.ffn[layer]!, dh);
    st.ffn[layer] = null;
    const dx = block.backwardPre(rt, st.pre[layer]!, dxn2, dh);
    st.pre[layer] = null;
    rt.pool.release(dxn2);
    rt.pool.release(dh);
    rt.pool.release(st.inputs[layer]);
    st.inputs[layer] = null;
    st.dh = dx;
    this.kickReduce(sys, blockUnitId(layer));
    if (block.moe) this.kickReduce(sys, expertUnitId(layer));
  }

  private async backwardEmbed({ microbatch, step }: StepStageInput, sys: System): Promise<void> {
    const st = this.mbState(microbatch);
    const u = this.unit(sys, UNIT_EMBED);
    await u.shard.unshard(u.ref, 'backward', microbatch, step);
    const N = st.mb.B * st.mb.S;
    this.model.embedBackward(st.dh!, st.mb.tokens, N);
    this.model.rt.pool.release(st.dh);
    st.dh = null;
    if (this.model.blocks.length === 0) this.model.rt.pool.release(st.inputs[0]);
    this.kickReduce(sys, UNIT_EMBED);
  }

  private async reduceGradsStage(): Promise<void> {
    const pending = this.pendingReductions;
    this.pendingReductions = [];
    await Promise.all(pending);
  }
}
