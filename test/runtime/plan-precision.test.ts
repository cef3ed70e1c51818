// The planner's bytes under mixed_precision_param = "bfloat16": parameter all-gathers (fsdp, efsdp) carry 2-byte
// elements, gradient reductions stay f32, and EP dispatch rows halve (counts stay int32), as the transports move them.
import { describe, expect, it } from 'vitest';
import { loadTrainConfig, planJob } from '../../src/train/trainer.ts';
import { TINY } from './helpers.ts';

function plan(dtype: string, dispatch: string, reduce = 'float32') {
  const over = [
    '--parallelism.expert_parallel_degree',
    '2',
    '--comm.dispatch',
    dispatch,
    '--training.mixed_precision_param',
    dtype,
    '--training.mixed_precision_reduce',
    reduce,
  ];
  return planJob(loadTrainConfig({ config: TINY, transport: 'inproc', ranks: 4 }, over), 4);
}

describe('planner bytes under bf16', () => {
  it('halve the parameter all-gathers and the EP rows, keep the f32 reductions', () => {
    for (const dispatch of ['a2a', 'allgather-padded', 'allgather-rs']) {
      const f = plan('float32', dispatch).bytesPerStep;
      const b = plan('bfloat16', dispatch).bytesPerStep;
      expect(b.fsdp! / f.fsdp!, `${dispatch} fsdp`).toBe(0.5);
      expect(b.efsdp! / f.efsdp!, `${dispatch} efsdp`).toBe(0.5);
      expect(b.fsdp_reduce, `${dispatch} fsdp_reduce`).toBe(f.fsdp_reduce);
      const ep = b.ep! / f.ep!;
      // a2a moves only rows (and E int32 counts): ≈ ½; the all_gather strategies keep f32 reduce_scatters: between ½ and 1.
      if (dispatch === 'a2a') expect(ep).toBeGreaterThan(0.5), expect(ep).toBeLessThan(0.51);
      else expect(ep).toBeGreaterThan(0.5), expect(ep).toBeLessThan(1);
    }
  });

  it('mixed_precision_reduce = "bfloat16" halves the gradient reduce_scatters only', () => {
    const f = plan('bfloat16', 'a2a').bytesPerStep;
    const b = plan('bfloat16', 'a2a', 'bfloat16').bytesPerStep;
    expect(b.fsdp_reduce! / f.fsdp_reduce!).toBe(0.5);
    expect(b.efsdp_reduce! / f.efsdp_reduce!).toBe(0.5);
    expect(b.fsdp).toBe(f.fsdp);
    expect(b.ep).toBe(f.ep);
  });
});
