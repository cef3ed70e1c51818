import { describe, expect, it } from 'vitest';
import { OMP_SPIN_COUNT, chooseOmpWait } from '../../src/tensor/omp-wait.ts';

const base = {
  env: {},
  onednnBuilt: true,
  avx512: true,
  cores: 2,
  busy: () => ({ busyCores: 0.1, busySource: '0.1 cores busy' }),
};

describe('chooseOmpWait (the OpenMP wait policy decided before libgomp loads)', () => {
  it('spins a bounded count when every matmul is on oneDNN and the job fits the cores', () => {
    for (const computeThreads of [1, 2]) {
      const c = chooseOmpWait({ ...base, computeThreads });
      expect(c.mode).toBe('spin');
      expect(c.set).toEqual({ GOMP_SPINCOUNT: String(OMP_SPIN_COUNT) });
      expect(c.line).toContain(`${computeThreads} compute thread`);
    }
  });

  it('stays passive when oversubscribed: 4 ranks × 1 thread on 2 cores, 2 ranks × 2 threads on 2 cores', () => {
    for (const computeThreads of [4, 3]) {
      const c = chooseOmpWait({ ...base, computeThreads });
      expect(c.mode).toBe('passive');
      expect(c.set).toEqual({ OMP_WAIT_POLICY: 'passive' });
      expect(c.line).toContain('oversubscribed');
    }
  });

  it('stays passive on a node already loaded by other processes, or when its load is unknown', () => {
    const c = chooseOmpWait({
      ...base,
      computeThreads: 2,
      busy: () => ({ busyCores: 6, busySource: '6.0 cores busy' }),
    });
    expect(c.mode).toBe('passive');
    expect(c.line).toContain('already busy (6.0 cores busy)');
    expect(
      chooseOmpWait({ ...base, computeThreads: 1, busy: () => ({ busyCores: 1.4, busySource: '1.4 cores busy' }) })
        .mode,
    ).toBe('spin');
    expect(
      chooseOmpWait({ ...base, computeThreads: 1, busy: () => ({ busyCores: 1.6, busySource: '1.6 cores busy' }) })
        .mode,
    ).toBe('passive');
    expect(chooseOmpWait({ ...base, computeThreads: 2, busy: undefined }).mode).toBe('passive');
    expect(
      chooseOmpWait({ ...base, computeThreads: 2, busy: () => ({ busyCores: Number.NaN, busySource: '?' }) }).mode,
    ).toBe('passive');
  });

  it('measures the node only when everything else allows a spin (the window blocks start-up)', () => {
    let calls = 0;
    const busy = () => {
      calls++;
      return { busyCores: 0, busySource: '0.0 cores busy' };
    };
    chooseOmpWait({ ...base, busy, computeThreads: 4 });
    chooseOmpWait({ ...base, busy, env: { OMP_WAIT_POLICY: 'passive' }, computeThreads: 1 });
    chooseOmpWait({ ...base, busy, onednnBuilt: false, computeThreads: 1 });
    expect(calls).toBe(0);
    expect(chooseOmpWait({ ...base, busy, computeThreads: 2 }).mode).toBe('spin');
    expect(calls).toBe(1);
  });

  it('stays passive when OpenBLAS computes matmuls or the layout is unknown', () => {
    expect(chooseOmpWait({ ...base, onednnBuilt: false, computeThreads: 1 }).mode).toBe('passive');
    expect(chooseOmpWait({ ...base, env: { MOE_ACTORS_MATMUL: 'blas' }, computeThreads: 1 }).mode).toBe('passive');
    expect(chooseOmpWait({ ...base }).mode).toBe('passive');
    expect(chooseOmpWait({ ...base, computeThreads: 0 }).mode).toBe('passive');
    // MOE_ACTORS_MATMUL=onednn/auto keep every matmul on oneDNN.
    expect(chooseOmpWait({ ...base, env: { MOE_ACTORS_MATMUL: 'onednn' }, computeThreads: 2 }).mode).toBe('spin');
    // Without AVX-512 auto puts them on OpenBLAS; onednn still forces oneDNN.
    const noAvx512 = chooseOmpWait({ ...base, avx512: false, computeThreads: 2 });
    expect(noAvx512.mode).toBe('passive');
    expect(noAvx512.line).toContain('no AVX-512');
    expect(
      chooseOmpWait({ ...base, avx512: false, env: { MOE_ACTORS_MATMUL: 'onednn' }, computeThreads: 2 }).mode,
    ).toBe('spin');
  });

  it("keeps the user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT, even oversubscribed or on OpenBLAS", () => {
    const a = chooseOmpWait({ ...base, env: { OMP_WAIT_POLICY: 'active' }, computeThreads: 8, onednnBuilt: false });
    expect(a).toMatchObject({ mode: 'user', set: {} });
    expect(a.line).toContain('OMP_WAIT_POLICY=active');
    expect(chooseOmpWait({ ...base, env: { GOMP_SPINCOUNT: '0' }, computeThreads: 1 }).mode).toBe('user');
  });
});
