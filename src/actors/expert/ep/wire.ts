// EP rows on the wire in the compute dtype: under bf16 mixed precision (torchtitan/FSDP2 param_dtype bfloat16)
// dispatch, combine and their gradients move bf16 rows, half the bytes of f32; counts and routing ids stay
// integers, and reduce_scatters stay f32 (the reduce dtype). The rows are rounded to bf16 before sending and
// widened on arrival; the experts' matmuls round their inputs to bf16 anyway, so dispatching bf16 rows changes no
// forward result there.
import type { CallOptions, Communicator } from '../../../comm/communicator.ts';
import type { Kernels } from '../../../tensor/kernels-api.ts';
import { paramDtypeOf } from '../../../tensor/precision.ts';

const total = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** all_to_all_v of f32 rows, carried as bf16 when `k` computes in bf16. */
export async function allToAllRows(
  k: Kernels,
  ep: Communicator,
  send: Float32Array,
  sendCounts: number[],
  recv: Float32Array,
  recvCounts: number[],
  opts: CallOptions,
): Promise<void> {
  if (paramDtypeOf(k) !== 'bfloat16') return ep.allToAllV(send, sendCounts, recv, recvCounts, opts);
  const n = total(sendCounts);
  const m = total(recvCounts);
  const a = new Uint16Array(n);
  const b = new Uint16Array(m);
  k.toBf16(send, a, n);
  await ep.allToAllV(a, sendCounts, b, recvCounts, opts);
  k.fromBf16(b, recv, m);
}

/** all_gather of f32 rows, carried as bf16 when `k` computes in bf16. */
export async function allGatherRows(
  k: Kernels,
  ep: Communicator,
  send: Float32Array,
  recv: Float32Array,
  opts: CallOptions,
): Promise<void> {
  if (paramDtypeOf(k) !== 'bfloat16') return ep.allGather(send, recv, opts);
  const a = new Uint16Array(send.length);
  const b = new Uint16Array(recv.length);
  k.toBf16(send, a, send.length);
  await ep.allGather(a, b, opts);
  k.fromBf16(b, recv, recv.length);
}
