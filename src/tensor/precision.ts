// Compute precision of a rank's matmuls: torchtitan's `[training] mixed_precision_param`.
//
// With "bfloat16" (FSDP2's MixedPrecisionPolicy(param_dtype=bfloat16)) every matmul of the model — projections,
// FFN and expert GEMMs, the router gate, the output head, forward and both backward products — takes bf16-rounded
// inputs and sums their products in f32 (Kernels.sgemmBf16); attention takes bf16 q, k, v (layers/sdpa.ts) and
// what a bf16 op produced is kept in bf16 (SDPA's outputs, the FFNs' w1/w3 outputs and gate: layers/ffn.ts). The
// rest stays f32, as torch keeps it: the master weights and AdamW state, the loss and its softmax, the norms'
// statistics, the router's scores. Exact copies that go through sgemm (copyCols: x·I) keep the f32 path:
// `exactKernels`.
import type { Kernels } from './kernels-api.ts';

export type ParamDtype = 'float32' | 'bfloat16';

/** Bytes per element of a dtype. */
export function dtypeBytes(d: ParamDtype): 2 | 4 {
  return d === 'bfloat16' ? 2 : 4;
}

const EXACT = Symbol('exact f32 kernels');
type Tagged = Kernels & { [EXACT]?: Kernels };

let saidNoBf16Dot = false;
const bf16Dot = new WeakMap<Kernels, boolean>();

/** Whether `k`'s CPU multiplies bf16 natively (blasInfo is a native call: asked once per kernels object). */
export function hasBf16Dot(k: Kernels): boolean {
  let v = bf16Dot.get(k);
  if (v === undefined) {
    v = k.blasInfo().bf16Dot !== false;
    bf16Dot.set(k, v);
  }
  return v;
}

/**
 * The kernels a model of this compute dtype runs on: `k` itself for float32; for bfloat16 a view of `k` whose
 * sgemm is sgemmBf16. On a CPU without bf16 dot products the bf16 rounding still happens (storage and results
 * are bf16's), the products run in f32; said once per process.
 */
export function kernelsFor(k: Kernels, dtype: ParamDtype): Kernels {
  if (dtype === 'float32') return k;
  if (!hasBf16Dot(k) && !saidNoBf16Dot) {
    saidNoBf16Dot = true;
    console.warn(
      'moe-actors: this CPU has no bf16 dot-product instructions (AVX512_BF16/AMX): bf16 matmul and attention inputs are widened and multiplied in f32 (same rounding of the inputs, no speed-up).',
    );
  }
  const view = Object.create(k) as Tagged;
  view.sgemm = k.sgemmBf16.bind(k);
  view[EXACT] = k;
  return view;
}

/** The compute dtype a kernels object was made for by kernelsFor (activation rows on the wire move in it). */
export function paramDtypeOf(k: Kernels): ParamDtype {
  return (k as Tagged)[EXACT] ? 'bfloat16' : 'float32';
}

/** The f32 kernels under a compute-dtype view (or `k` itself), for sgemm-based copies that must stay exact. */
export function exactKernels(k: Kernels): Kernels {
  return (k as Tagged)[EXACT] ?? k;
}
