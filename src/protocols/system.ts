// A system: the device's rates and memory, the links' α–β figures, and how the training stack on it holds memory —
// what `moe-actors project` needs besides the job config. Files live in configs/systems/*.toml (each figure cited
// by its source there); this module checks a parsed file and names every wrong or missing field with its fix.

import type { ComputeDtype, StackKind } from './projection-memory.ts';

export interface LinkSpec {
  /** α: one collective's fixed cost (launch, synchronisation, first byte), seconds. */
  latencyS: number;
  /** β: bytes per second a rank receives in a large collective. */
  bytesPerS: number;
  /**
   * The link's copies are CPU work on the cores that compute (threads / shared-memory transports on a CPU node):
   * β is then the node's aggregate copy rate, shared by the ranks like the device's rates, and the collectives'
   * time adds to compute instead of overlapping it.
   */
  onComputeCores: boolean;
}

export interface SystemSpec {
  name: string;
  source: string;
  device: {
    memoryBytes: number;
    /** Peak FLOP/s per rank for MFU, as torchtitan counts it, per compute dtype. */
    peakFlops: Record<ComputeDtype, number>;
    /** Sustained matmul FLOP/s per rank (large GEMMs), per compute dtype. */
    matmulFlops: Record<ComputeDtype, number>;
    /**
     * Measured rates of smaller GEMM shape classes (FLOPs per call, ascending, below LARGE_GEMM_FLOP), per compute
     * dtype; a GEMM between two points runs at the log-log interpolation, above the last at `matmulFlops` reached at
     * LARGE_GEMM_FLOP. Absent: every GEMM at `matmulFlops`.
     */
    matmulClasses?: { flop: number[]; flops: Record<ComputeDtype, number[]> };
    /** Sustained attention (SDPA) FLOP/s per rank, per compute dtype. */
    attentionFlops: Record<ComputeDtype, number>;
    /** Memory bandwidth per rank for element-wise kernels, bytes/s. */
    memoryBytesPerS: number;
    /** Host-side cost of one eager op (dispatch + launch), seconds. */
    opOverheadS: number;
    /** Ranks that share one device's rates (a CPU node shared by all its ranks: 0 = every rank of the job). */
    ranksPerDevice: number;
  };
  links: { intra: LinkSpec; inter: LinkSpec };
  stack: {
    kind: StackKind;
    /** Compute dtype when the job config does not say (Aurora: torchtitan's default bf16). */
    computeDtype: ComputeDtype | 'config';
    allocatorFactor: number;
    rmax: number;
    unshardedInFlight: number;
  };
}

export class SystemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SystemError';
  }
}

type Obj = Record<string, unknown>;

/** The GEMM size `matmul_tflops_*` is measured at (2 · 1024³ FLOP, bench:kernels' sgemm peak). */
export const LARGE_GEMM_FLOP = 2 * 1024 ** 3;

function numbers(o: Obj, key: string, where: string, n?: number): number[] {
  const v = o[key];
  if (
    !Array.isArray(v) ||
    v.length === 0 ||
    v.some((x) => typeof x !== 'number' || !(x > 0)) ||
    (n !== undefined && v.length !== n)
  )
    throw new SystemError(
      `${where}: ${key} must be a list of ${n ?? 'one or more'} positive numbers (got ${JSON.stringify(v)})`,
    );
  return v as number[];
}

function matmulClasses(d: Obj, where: string): SystemSpec['device']['matmulClasses'] {
  if (d.matmul_classes === undefined) return undefined;
  const t = table(d, 'matmul_classes', where);
  checkKeys(t, 'device.matmul_classes', where);
  const w = `${where} [device.matmul_classes]`;
  const mflop = numbers(t, 'mflop', w);
  for (let i = 0; i < mflop.length; i++)
    if ((i > 0 && mflop[i]! <= mflop[i - 1]!) || mflop[i]! * 1e6 >= LARGE_GEMM_FLOP)
      throw new SystemError(`${w}: mflop must ascend and stay below ${LARGE_GEMM_FLOP / 1e6} (the large-GEMM size)`);
  return {
    flop: mflop.map((x) => x * 1e6),
    flops: {
      float32: numbers(t, 'tflops_fp32', w, mflop.length).map((x) => x * 1e12),
      bfloat16: numbers(t, 'tflops_bf16', w, mflop.length).map((x) => x * 1e12),
    },
  };
}

function table(o: Obj, key: string, where: string): Obj {
  const v = o[key];
  if (v === undefined)
    throw new SystemError(`${where}: missing [${key}] table; add it (see configs/systems/local.toml)`);
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new SystemError(`${where}: [${key}] must be a table`);
  return v as Obj;
}

function num(o: Obj, key: string, where: string, opts: { min?: number; positive?: boolean } = {}): number {
  const v = o[key];
  if (v === undefined) throw new SystemError(`${where}: missing ${key}; add it with its source in a comment`);
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new SystemError(`${where}: ${key} must be a number (got ${JSON.stringify(v)})`);
  if (opts.positive && !(v > 0)) throw new SystemError(`${where}: ${key} must be > 0 (got ${v})`);
  if (opts.min !== undefined && v < opts.min)
    throw new SystemError(`${where}: ${key} must be ≥ ${opts.min} (got ${v})`);
  return v;
}

function oneOf<T extends string>(o: Obj, key: string, values: readonly T[], where: string): T {
  const v = o[key];
  if (typeof v !== 'string' || !values.includes(v as T)) {
    throw new SystemError(
      `${where}: ${key} must be one of ${values.map((x) => `"${x}"`).join(', ')} (got ${JSON.stringify(v)})`,
    );
  }
  return v as T;
}

const KNOWN: Record<string, readonly string[]> = {
  '': ['name', 'device', 'links', 'stack'],
  device: [
    'memory_gib',
    'peak_tflops_bf16',
    'peak_tflops_fp32',
    'matmul_tflops_bf16',
    'matmul_tflops_fp32',
    'attention_tflops_bf16',
    'attention_tflops_fp32',
    'memory_gbps',
    'op_overhead_us',
    'ranks_per_device',
    'matmul_classes',
  ],
  'device.matmul_classes': ['mflop', 'tflops_fp32', 'tflops_bf16'],
  'links.intra': ['latency_us', 'gbps', 'copies_on_compute_cores'],
  'links.inter': ['latency_us', 'gbps', 'copies_on_compute_cores'],
  links: ['intra', 'inter'],
  stack: ['kind', 'compute_dtype', 'allocator_factor', 'rmax', 'unsharded_in_flight'],
};

function checkKeys(o: Obj, path: string, where: string): void {
  const known = KNOWN[path]!;
  for (const k of Object.keys(o)) {
    if (!known.includes(k))
      throw new SystemError(`${where}: unknown field ${path ? `${path}.` : ''}${k}; valid: ${known.join(', ')}`);
  }
}

function flag(o: Obj, key: string, where: string): boolean {
  const v = o[key];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw new SystemError(`${where}: ${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function link(o: Obj, key: 'intra' | 'inter', where: string): LinkSpec {
  const t = table(o, key, `${where} [links]`);
  checkKeys(t, `links.${key}`, where);
  return {
    latencyS: num(t, 'latency_us', `${where} [links.${key}]`, { min: 0 }) * 1e-6,
    bytesPerS: num(t, 'gbps', `${where} [links.${key}]`, { positive: true }) * 1e9,
    onComputeCores: flag(t, 'copies_on_compute_cores', `${where} [links.${key}]`),
  };
}

/** A parsed system file → SystemSpec, or a SystemError naming the field and the fix. */
export function parseSystem(o: Obj, source: string): SystemSpec {
  const where = `system ${source}`;
  checkKeys(o, '', where);
  const name = o.name;
  if (typeof name !== 'string' || !name) throw new SystemError(`${where}: missing name = "…"`);
  const d = table(o, 'device', where);
  checkKeys(d, 'device', where);
  const dw = `${where} [device]`;
  const l = table(o, 'links', where);
  checkKeys(l, 'links', where);
  const s = table(o, 'stack', where);
  checkKeys(s, 'stack', where);
  const sw = `${where} [stack]`;
  const tf = (k: string) => num(d, k, dw, { positive: true }) * 1e12;
  return {
    name,
    source,
    device: {
      memoryBytes: num(d, 'memory_gib', dw, { positive: true }) * 2 ** 30,
      peakFlops: { bfloat16: tf('peak_tflops_bf16'), float32: tf('peak_tflops_fp32') },
      matmulFlops: { bfloat16: tf('matmul_tflops_bf16'), float32: tf('matmul_tflops_fp32') },
      matmulClasses: matmulClasses(d, dw),
      attentionFlops: { bfloat16: tf('attention_tflops_bf16'), float32: tf('attention_tflops_fp32') },
      memoryBytesPerS: num(d, 'memory_gbps', dw, { positive: true }) * 1e9,
      opOverheadS: num(d, 'op_overhead_us', dw, { min: 0 }) * 1e-6,
      ranksPerDevice: num(d, 'ranks_per_device', dw, { min: 0 }),
    },
    links: { intra: link(l, 'intra', where), inter: link(l, 'inter', where) },
    stack: {
      kind: oneOf(s, 'kind', ['torchtitan', 'moe-actors'] as const, sw),
      computeDtype: oneOf(s, 'compute_dtype', ['bfloat16', 'float32', 'config'] as const, sw),
      allocatorFactor: num(s, 'allocator_factor', sw, { min: 1 }),
      rmax: num(s, 'rmax', sw, { min: 1 }),
      unshardedInFlight: num(s, 'unsharded_in_flight', sw, { min: 1 }),
    },
  };
}
