// FSDP units: torchtitan wraps tok_embeddings, each block's non-routed-expert params, each MoE block's routed
// experts (on the EP mesh), and norm + output as separate FSDP groups. Here each unit is one flat Float32Array
// (category params) with a layout name → (offset, shape), every parameter a view into it, and a flat grad buffer
// with the same layout (category grads). Flat storage is what FSDP shards and what collectives move, so the
// distributed layer can all_gather / reduce_scatter a unit without copying parameter by parameter.
//
// A routed-experts unit may hold only experts [e0, e0 + L) of E (an EP shard): its tensors keep their torchtitan
// names but have L rows on dim 0.

import type { Allocator } from '../../tensor/allocator.ts';
import type { Kernels } from '../../tensor/kernels-api.ts';
import { numelOf } from '../../tensor/tensor.ts';
import type { InitSpec, ParamSpec } from '../spec.ts';

/** Offsets are multiples of 16 floats (64 bytes) so every parameter starts on a cache line. */
const ALIGN = 16;

export interface ExpertRange {
  /** First local expert (global id). */
  start: number;
  /** Number of local experts L. */
  count: number;
}

export interface LayoutEntry {
  name: string;
  /** Local shape (dim 0 = L for routed-expert tensors of an EP shard). */
  shape: readonly number[];
  /** Shape in the full model (what a checkpoint holds). */
  globalShape: readonly number[];
  offset: number;
  numel: number;
  init: InitSpec;
  expert: boolean;
}

export class UnitLayout {
  readonly entries: readonly LayoutEntry[];
  readonly numel: number;
  private readonly byName: Map<string, LayoutEntry>;

  constructor(
    readonly id: string,
    params: readonly ParamSpec[],
    /** Only for routed-expert units: the local experts; defaults to all. */
    readonly experts: ExpertRange | null = null,
  ) {
    const entries: LayoutEntry[] = [];
    let offset = 0;
    for (const p of params) {
      if (p.unit !== id) throw new Error(`UnitLayout ${id}: parameter ${p.name} belongs to unit ${p.unit}`);
      let shape = p.shape;
      if (p.expert && experts) {
        const E = p.shape[0]!;
        if (!(experts.start >= 0 && experts.count >= 1 && experts.start + experts.count <= E)) {
          throw new Error(
            `UnitLayout ${id}: local experts [${experts.start}, ${experts.start + experts.count}) are not within the ${E} experts of ${p.name}`,
          );
        }
        shape = [experts.count, ...p.shape.slice(1)];
      }
      const numel = numelOf(shape);
      entries.push({ name: p.name, shape, globalShape: p.shape, offset, numel, init: p.init, expert: p.expert });
      offset += Math.ceil(numel / ALIGN) * ALIGN;
    }
    this.entries = entries;
    this.numel = offset;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  entry(name: string): LayoutEntry {
    const e = this.byName.get(name);
    if (!e) throw new Error(`unit ${this.id} has no parameter ${name}; it has: ${[...this.byName.keys()].join(', ')}`);
    return e;
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }
}

/**
 * Flat parameters with a same-sized flat gradient: what the optimizer and clipping work on. A ParamUnit is one;
 * an FSDP shard of a unit (a slice of its flat storage) can be another.
 */
export interface FlatParams {
  readonly id: string;
  readonly data: Float32Array;
  readonly grad: Float32Array;
  readonly numel: number;
  /** Holds routed-expert parameters (EP-sharded: clipped in the EP group's norm). */
  readonly isExperts: boolean;
}

export interface UnitStorage {
  /** Flat params (layout.numel floats); defaults to a fresh tracked buffer. */
  data?: Float32Array;
  grad?: Float32Array;
}

export class ParamUnit implements FlatParams {
  private dataBuf: Float32Array | null;
  private gradBuf: Float32Array | null;
  private views = new Map<string, Float32Array>();
  private gradViews = new Map<string, Float32Array>();

  constructor(
    readonly layout: UnitLayout,
    private readonly alloc: Allocator,
    storage: UnitStorage = {},
  ) {
    this.dataBuf = storage.data ?? alloc.f32('params', layout.numel);
    this.gradBuf = storage.grad ?? alloc.f32('grads', layout.numel);
    this.check(this.dataBuf, 'data');
    this.check(this.gradBuf, 'grad');
  }

  private missing(what: string): never {
    throw new Error(`unit ${this.id}: no ${what} storage attached (the unit is resharded; unshard it before use)`);
  }

  get id(): string {
    return this.layout.id;
  }

  get numel(): number {
    return this.layout.numel;
  }

  get isExperts(): boolean {
    return this.layout.entries.some((e) => e.expert);
  }

  /** The flat parameter storage (what FSDP shards / gathers). */
  get data(): Float32Array {
    return this.dataBuf ?? this.missing('parameter');
  }

  /** The flat gradient storage, same layout. */
  get grad(): Float32Array {
    return this.gradBuf ?? this.missing('gradient');
  }

  /** Whether parameter / gradient storage is attached. */
  get hasData(): boolean {
    return this.dataBuf !== null;
  }

  get hasGrad(): boolean {
    return this.gradBuf !== null;
  }

  /** View of one parameter inside the flat storage. */
  p(name: string): Float32Array {
    let v = this.views.get(name);
    if (!v) {
      const e = this.layout.entry(name);
      v = this.data.subarray(e.offset, e.offset + e.numel);
      this.views.set(name, v);
    }
    return v;
  }

  /** View of one parameter's gradient. */
  g(name: string): Float32Array {
    let v = this.gradViews.get(name);
    if (!v) {
      const e = this.layout.entry(name);
      v = this.grad.subarray(e.offset, e.offset + e.numel);
      this.gradViews.set(name, v);
    }
    return v;
  }

  /**
   * One view over several parameters stored back to back in the given order (no alignment gap between them) in the
   * parameter or gradient storage, or null when the layout does not hold them so: a fused projection's stacked
   * weight (the rows of wq, then wk, then wv) and its gradient, without a copy.
   */
  span(names: readonly string[], of: 'data' | 'grad'): Float32Array | null {
    const es = names.map((n) => this.layout.entry(n));
    for (let i = 1; i < es.length; i++) if (es[i]!.offset !== es[i - 1]!.offset + es[i - 1]!.numel) return null;
    const last = es[es.length - 1]!;
    return (of === 'data' ? this.data : this.grad).subarray(es[0]!.offset, last.offset + last.numel);
  }

  /**
   * Zeroes the attached gradient storage (none attached: nothing to zero, the FSDP shard owns the grads); with
   * kernels, by their parallel zero (the whole model's gradients each step are memory-bound work).
   */
  zeroGrad(k?: Kernels): void {
    if (!this.gradBuf) return;
    if (k) k.zero(this.gradBuf, this.gradBuf.length);
    else this.gradBuf.fill(0);
  }

  /**
   * Swaps in other storage with the same layout (FSDP: the unsharded buffer after all_gather, or a shared one).
   * Views handed out before are invalid afterwards.
   */
  attach(storage: UnitStorage): void {
    if (storage.data) {
      this.check(storage.data, 'data');
      this.dataBuf = storage.data;
      this.views.clear();
    }
    if (storage.grad) {
      this.check(storage.grad, 'grad');
      this.gradBuf = storage.grad;
      this.gradViews.clear();
    }
  }

  /**
   * Drops the references to both storages (FSDP reshard): views handed out before are invalid, and p()/g() throw
   * until attach() provides storage again. Does not touch the allocator's accounting (the owner frees).
   */
  detach(): void {
    this.dataBuf = null;
    this.gradBuf = null;
    this.views.clear();
    this.gradViews.clear();
  }

  /** Releases the unit's attached buffers from the allocator's accounting. */
  free(): void {
    this.alloc.free(this.dataBuf ?? undefined);
    this.alloc.free(this.gradBuf ?? undefined);
  }

  private check(a: Float32Array, what: string): void {
    if (a.length < this.layout.numel) {
      throw new Error(`unit ${this.id}: ${what} storage has ${a.length} floats, the layout needs ${this.layout.numel}`);
    }
  }
}
