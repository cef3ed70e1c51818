// The single-rank model: FSDP units of flat parameters, the blocks, the output head, the MoE buffers, and a
// forward/backward over one microbatch with activation checkpointing. The distributed layer drives the same
// pieces (embed, blocks[i].forward/backward, MoE stages, head) with collectives in between.

import { Allocator } from '../../tensor/allocator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import { getKernels } from '../../tensor/kernels.ts';
import type { ResolvedModelConfig } from '../config.ts';
import { embeddingBackward, embeddingForward } from '../layers/embedding.ts';
import { buildRopeTable, checkRopeLength, type RopeTable } from '../layers/rope.ts';
import type { MoeBuffers, MoeLayer } from '../moe/layer.ts';
import { initUnit } from '../params/init.ts';
import { ParamUnit, UnitLayout, type ExpertRange, type UnitStorage } from '../params/unit.ts';
import { createRuntime, type Runtime } from '../runtime.ts';
import {
  blockUnitId,
  buildModelSpec,
  checkRunnable,
  expertUnitId,
  paramSpecs,
  unitIds,
  UNIT_EMBED,
  UNIT_HEAD,
  type ModelSpec,
  type ParamSpec,
} from '../spec.ts';
import { isCheckpointed, type AcMode } from './ac.ts';
import { TransformerBlock, type BlockCtx } from './block.ts';
import { IGNORE_INDEX, OutputHead, type HeadCtx } from './head.ts';

export interface BuildOptions {
  alloc?: Allocator;
  kernels?: Kernels;
  /** EP shard: the local experts of every MoE layer (default: all). */
  experts?: ExpertRange;
  /** Initialise parameters as torchtitan with this seed; without it parameters start at zero (to be loaded). */
  seed?: number;
  /** Storage for a unit (e.g. FSDP's unsharded buffer); default: fresh tracked buffers. */
  storage?: (unitId: string, layout: UnitLayout) => UnitStorage | undefined;
}

/** One microbatch: tokens and labels (B·S), labels −100 = ignored. */
export interface Microbatch {
  tokens: Int32Array;
  labels: Int32Array;
  B: number;
  S: number;
}

export interface ForwardOptions {
  /** Valid (≠ −100) labels over every microbatch of the step on every rank; default: this microbatch's. */
  globalValidTokens?: number;
  ac?: AcMode;
}

export interface ForwardResult {
  /** Σ CE over this microbatch's valid tokens. */
  lossSum: number;
  /** lossSum / globalValidTokens: this microbatch's share of the step loss (what torchtitan backpropagates). */
  loss: number;
  validTokens: number;
}

interface Pending {
  mb: Microbatch;
  /** inputs[i] = input of block i; inputs[L] = input of the head. */
  inputs: Float32Array[];
  /** null for a checkpointed block (recomputed before its backward). */
  ctxs: (BlockCtx | null)[];
  head: HeadCtx;
}

export function countValid(labels: Int32Array): number {
  let n = 0;
  for (let i = 0; i < labels.length; i++) if (labels[i] !== IGNORE_INDEX) n++;
  return n;
}

export class Model {
  readonly rt: Runtime;
  readonly alloc: Allocator;
  readonly units: ReadonlyMap<string, ParamUnit>;
  readonly blocks: readonly TransformerBlock[];
  readonly head: OutputHead;
  readonly rope: RopeTable;
  /** MoE buffers by layer id. */
  readonly moeBuffers: ReadonlyMap<number, MoeBuffers>;
  readonly experts: ExpertRange | null;
  private readonly byName = new Map<string, ParamUnit>();
  private pending: Pending | null = null;

  constructor(
    readonly spec: ModelSpec,
    opts: BuildOptions = {},
  ) {
    checkRunnable(spec);
    this.alloc = opts.alloc ?? new Allocator();
    this.rt = createRuntime(opts.kernels ?? getKernels(), this.alloc);
    this.experts = opts.experts ?? null;
    const params = paramSpecs(spec);
    const byUnit = new Map<string, ParamSpec[]>();
    for (const p of params) {
      let l = byUnit.get(p.unit);
      if (!l) byUnit.set(p.unit, (l = []));
      l.push(p);
    }
    const units = new Map<string, ParamUnit>();
    for (const id of unitIds(spec)) {
      const isExperts = id.endsWith('.moe.experts');
      const layout = new UnitLayout(id, byUnit.get(id) ?? [], isExperts ? this.experts : null);
      const unit = new ParamUnit(layout, this.alloc, opts.storage?.(id, layout) ?? {});
      units.set(id, unit);
      for (const e of layout.entries) this.byName.set(e.name, unit);
    }
    this.units = units;
    this.rope = buildRopeTable(spec.rope);
    const bufs = new Map<number, MoeBuffers>();
    const blocks: TransformerBlock[] = [];
    for (const b of spec.blocks) {
      let mb: MoeBuffers | null = null;
      if (b.ffn.kind === 'moe') {
        const E = b.ffn.args.num_experts;
        mb = {
          expertBias: b.ffn.args.load_balance_coeff !== null ? this.alloc.f32('other', E) : null,
          tokensPerExpert: this.alloc.f32('other', E),
        };
        bufs.set(b.layerId, mb);
      }
      blocks.push(
        new TransformerBlock(
          b,
          units.get(blockUnitId(b.layerId))!,
          b.ffn.kind === 'moe' ? units.get(expertUnitId(b.layerId))! : null,
          mb,
          spec.dim,
          this.rope,
        ),
      );
    }
    this.blocks = blocks;
    this.moeBuffers = bufs;
    this.head = new OutputHead(units.get(UNIT_HEAD)!, spec.dim, spec.vocabSize, spec.finalNormEps);
    if (opts.seed !== undefined) for (const u of units.values()) initUnit(u, opts.seed);
  }

  static build(config: ResolvedModelConfig, opts: BuildOptions = {}): Model {
    return new Model(buildModelSpec(config), opts);
  }

  // ---- parameters ----

  /** The unit holding parameter `name` (torchtitan name). */
  unitOf(name: string): ParamUnit {
    const u = this.byName.get(name);
    if (!u) throw new Error(`model has no parameter ${name}`);
    return u;
  }

  param(name: string): Float32Array {
    return this.unitOf(name).p(name);
  }

  grad(name: string): Float32Array {
    return this.unitOf(name).g(name);
  }

  paramNames(): string[] {
    return [...this.byName.keys()];
  }

  zeroGrads(): void {
    for (const u of this.units.values()) u.zeroGrad(this.rt.k);
  }

  moeLayers(): MoeLayer[] {
    return this.blocks.flatMap((b) => (b.moe ? [b.moe] : []));
  }

  // ---- pieces the distributed layer drives (forward() below composes exactly these) ----

  /** tokens (N) → h0 (N,D) (caller owns). */
  embed(tokens: Int32Array, N: number): Float32Array {
    return embeddingForward(this.rt, this.units.get(UNIT_EMBED)!.p('tok_embeddings.weight'), tokens, N, this.spec.dim);
  }

  /** dh0 (N,D) → tok_embeddings grad +=. */
  embedBackward(dh: Float32Array, tokens: Int32Array, N: number): void {
    embeddingBackward(this.rt, dh, tokens, this.units.get(UNIT_EMBED)!.g('tok_embeddings.weight'), N, this.spec.dim);
  }

  // ---- one microbatch ----

  /** Embedding → blocks → head; keeps what backward needs. One forward may be pending at a time. */
  forward(mb: Microbatch, opts: ForwardOptions = {}): ForwardResult {
    if (this.pending)
      throw new Error('Model.forward: the previous forward has not been backpropagated (call backward() or discard())');
    const { B, S, tokens, labels } = mb;
    const N = B * S;
    if (tokens.length !== N || labels.length !== N) {
      throw new Error(
        `microbatch: tokens (${tokens.length}) and labels (${labels.length}) must both hold B·S = ${B}·${S} = ${N} ids`,
      );
    }
    checkRopeLength(this.rope, S);
    const V = this.spec.vocabSize;
    for (let i = 0; i < N; i++) {
      const y = labels[i]!;
      if (y !== IGNORE_INDEX && !(y >= 0 && y < V)) {
        throw new RangeError(
          `label ${y} at position ${i} is outside the vocabulary [0, ${V}) and is not the ignore index ${IGNORE_INDEX}`,
        );
      }
    }
    const valid = countValid(labels);
    const globalValid = opts.globalValidTokens ?? valid;
    if (!(globalValid > 0))
      throw new Error(`global valid token count must be > 0 (got ${globalValid}): every label is ${IGNORE_INDEX}?`);
    const ac = opts.ac ?? { mode: 'none' };
    const rt = this.rt;
    const inputs: Float32Array[] = [this.embed(tokens, N)];
    const ctxs: (BlockCtx | null)[] = [];
    for (const block of this.blocks) {
      const r = block.forward(rt, inputs[inputs.length - 1]!, B, S);
      if (isCheckpointed(block.layerId, ac)) {
        block.release(rt, r.ctx);
        ctxs.push(null);
      } else ctxs.push(r.ctx);
      inputs.push(r.out);
    }
    const scale = 1 / globalValid;
    const h = this.head.forward(rt, inputs[inputs.length - 1]!, labels, N, scale);
    this.pending = { mb, inputs, ctxs, head: h.ctx };
    return { lossSum: h.lossSum, loss: h.lossSum * scale, validTokens: valid };
  }

  /** Backpropagates the pending forward: grads accumulate into every unit's grad buffer. */
  backward(): void {
    const p = this.pending;
    if (!p) throw new Error('Model.backward: no pending forward');
    this.pending = null;
    const rt = this.rt;
    const { B, S, tokens } = p.mb;
    const N = B * S;
    let dh = this.head.backward(rt, p.head);
    rt.pool.release(p.inputs[this.blocks.length]);
    for (let i = this.blocks.length - 1; i >= 0; i--) {
      const block = this.blocks[i]!;
      let ctx = p.ctxs[i] ?? null;
      if (ctx === null) {
        // Recompute (activation checkpointing): the router runs again and counts again, as in torchtitan.
        const r = block.forward(rt, p.inputs[i]!, B, S);
        rt.pool.release(r.out);
        ctx = r.ctx;
      }
      const dx = block.backward(rt, ctx, dh);
      rt.pool.release(dh);
      rt.pool.release(p.inputs[i]);
      dh = dx;
    }
    this.embedBackward(dh, tokens, N);
    rt.pool.release(dh);
  }

  /** Drops a pending forward without backward (evaluation). */
  discard(): void {
    const p = this.pending;
    if (!p) return;
    this.pending = null;
    this.head.release(this.rt, p.head);
    p.ctxs.forEach((c, i) => c && this.blocks[i]!.release(this.rt, c));
    for (const a of p.inputs) this.rt.pool.release(a);
  }
}
