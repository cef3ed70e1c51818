// Kernel selection and argument checking: native by default, the reference only when asked for, clear errors
// (cause and fix) for a missing addon, a bad MOE_ACTORS_KERNELS value, and bad buffers or indices.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadNativeKernelsFrom, nativeKernels } from '../../src/tensor/kernels.ts';
import { hasAvx512Core } from '../../src/tensor/cpu-features.ts';

const ADDON = fileURLToPath(new URL('../../native/kernels/build/Release/kernels.node', import.meta.url));

const saved = process.env.MOE_ACTORS_KERNELS;
afterEach(() => {
  if (saved === undefined) delete process.env.MOE_ACTORS_KERNELS;
  else process.env.MOE_ACTORS_KERNELS = saved;
  vi.resetModules();
});

async function freshGetKernels() {
  vi.resetModules(); // getKernels caches its choice per module instance (= per thread)
  return (await import('../../src/tensor/kernels.ts')).getKernels;
}

describe('getKernels', () => {
  it('is native by default and a per-thread singleton', async () => {
    delete process.env.MOE_ACTORS_KERNELS;
    const get = await freshGetKernels();
    expect(get().impl).toBe('native');
    expect(get()).toBe(get());
    const info = get().blasInfo();
    expect(info.name).toMatch(/openblas|mkl/);
    expect(info.threads).toBeGreaterThanOrEqual(1);
  });

  it('loads with a sleeping OpenMP wait policy and a deliberate OpenBLAS core choice, and reports both', () => {
    const userPolicy =
      process.env.GOMP_SPINCOUNT === undefined
        ? (process.env.OMP_WAIT_POLICY ?? 'passive')
        : process.env.OMP_WAIT_POLICY;
    const info = nativeKernels().blasInfo();
    expect(info.ompWaitPolicy).toBe(userPolicy);
    if (info.name === 'openblas') {
      expect(info.coretypeSource).toMatch(/^(env|auto|openblas)$/);
      if (info.coretypeSource !== 'openblas')
        expect(info.corename?.toLowerCase()).toBe(process.env.OPENBLAS_CORETYPE?.toLowerCase());
    }
  });

  it('keeps an oversubscribed job (4 ranks × 1 thread on 2 cores) passive, decided before libgomp loads', () => {
    const kernelsTs = fileURLToPath(new URL('../../src/tensor/kernels.ts', import.meta.url));
    // Matmuls forced onto oneDNN: on a CPU without AVX-512 auto would put them on OpenBLAS, itself a reason for
    // passive, and this test is about the thread count.
    const env: NodeJS.ProcessEnv = { ...process.env, MOE_ACTORS_MATMUL: 'onednn' };
    delete env.OMP_WAIT_POLICY;
    delete env.GOMP_SPINCOUNT;
    const cores = 2;
    const program = `
      import { availableParallelism } from 'node:os';
      const m = await import(${JSON.stringify(kernelsTs)});
      const choice = m.setOpenMpLayout({ computeThreads: 2 * Math.max(${cores}, availableParallelism()) });
      const info = m.getKernels().blasInfo();
      console.log(JSON.stringify({ mode: choice.mode, line: choice.line, policy: info.ompWaitPolicy ?? null,
        spin: process.env.GOMP_SPINCOUNT ?? null, late: m.setOpenMpLayout({ computeThreads: 1 }) }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program], {
      encoding: 'utf8',
      env,
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out).toMatchObject({ mode: 'passive', policy: 'passive', spin: null, late: null });
    expect(out.line).toMatch(/oversubscribed/);
  });

  it('reports the matmul library: oneDNN with its ISA when built in, else why not and the fix', () => {
    const info = nativeKernels().blasInfo();
    expect(info.matmulMode).toMatch(/^(auto|onednn|blas)$/);
    if (info.onednn) expect(info.onednnIsa).toMatch(/^(sse41|avx|avx2|avx512_core\w*|other)$/);
    else expect(info.onednnStatus).toMatch(/libdnnl-dev/);
    expect(typeof info.bf16Dot).toBe('boolean');
  });

  it('auto puts f32 matmuls on oneDNN exactly where oneDNN runs AVX-512, the test the wait policy makes first', () => {
    const info = nativeKernels().blasInfo();
    expect(hasAvx512Core(new Set(['avx2', 'fma']))).toBe(false);
    expect(hasAvx512Core(new Set(['avx512f', 'avx512bw', 'avx512vl', 'avx512dq']))).toBe(true);
    expect(hasAvx512Core(new Set(['avx512f', 'avx512cd']))).toBe(false);
    if (!info.onednn || info.matmulMode !== 'auto') return;
    const onednnAvx512 = /^avx512/.test(info.onednnIsa ?? '');
    // The wait policy decides before libgomp loads, from /proc/cpuinfo; the addon decides from oneDNN's detection.
    expect(hasAvx512Core()).toBe(onednnAvx512);
    expect(info.f32Matmuls).toBe(onednnAvx512 ? 'onednn' : 'blas');
  });

  it('rejects an unknown MOE_ACTORS_MATMUL value at load, naming the choices', () => {
    const r = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(ADDON)})`], {
      encoding: 'utf8',
      env: { ...process.env, MOE_ACTORS_MATMUL: 'cublas' },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/MOE_ACTORS_MATMUL=cublas is not a matmul library; use auto \(default\), onednn or blas/);
  });

  it('MOE_ACTORS_BF16_DOT=0 takes the no-bf16-dot path: bf16 products are then the f32 products of the widened values', () => {
    // Run in a child: the addon reads the variable once. The f32 product of the widened operands is the reference
    // bit for bit (same library, same shape); oneDNN's bf16 kernels, where the CPU has them, sum in another order.
    const kernelsTs = fileURLToPath(new URL('../../src/tensor/kernels.ts', import.meta.url));
    const program = `
      const { nativeKernels } = await import(${JSON.stringify(kernelsTs)});
      const k = nativeKernels();
      const M = 37, N = 29, K = 301;
      const f = (n, s) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * s) * 3);
      const a = new Uint16Array(M * K), b = new Uint16Array(K * N);
      k.toBf16(f(M * K, 0.37), a, M * K); k.toBf16(f(K * N, 0.11), b, K * N);
      const wa = new Float32Array(M * K), wb = new Float32Array(K * N);
      k.fromBf16(a, wa, M * K); k.fromBf16(b, wb, K * N);
      const c16 = new Float32Array(M * N), c32 = new Float32Array(M * N);
      k.sgemmBf16(false, false, M, N, K, 1, a, K, b, N, 0, c16, N);
      k.sgemm(false, false, M, N, K, 1, wa, K, wb, N, 0, c32, N);
      let same = 0; for (let i = 0; i < M * N; i++) same += c16[i] === c32[i] ? 1 : 0;
      console.log(JSON.stringify({ bf16Dot: k.blasInfo().bf16Dot, same, n: M * N }));`;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program], {
      encoding: 'utf8',
      env: { ...process.env, MOE_ACTORS_BF16_DOT: '0' },
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    expect(out).toEqual({ bf16Dot: false, same: out.n, n: 37 * 29 });
  });

  it('selects the TypeScript reference only with MOE_ACTORS_KERNELS=ts', async () => {
    process.env.MOE_ACTORS_KERNELS = 'ts';
    expect((await freshGetKernels())().impl).toBe('ts');
  });

  it('rejects an unknown MOE_ACTORS_KERNELS value, naming the choices', async () => {
    process.env.MOE_ACTORS_KERNELS = 'cuda';
    const get = await freshGetKernels();
    expect(() => get()).toThrow(/MOE_ACTORS_KERNELS=cuda .*"native".*"ts"/);
  });

  it('explains how to build a missing addon', () => {
    expect(() => loadNativeKernelsFrom('/nonexistent/kernels.node')).toThrow(
      /native kernels are missing[\s\S]*npm run build:native[\s\S]*libopenblas-dev[\s\S]*MOE_ACTORS_KERNELS=ts/,
    );
  });
});

describe('native argument checks (RangeError, no memory access out of bounds)', () => {
  const k = nativeKernels();
  it('short buffers name the kernel, the argument and the sizes', () => {
    expect(() =>
      k.rmsnormFwd(new Float32Array(10), new Float32Array(4), new Float32Array(12), new Float32Array(3), 3, 4, 1e-5),
    ).toThrow(/rmsnormFwd: x has 10 elements, needs at least 12/);
    expect(() =>
      k.sgemm(false, false, 4, 4, 4, 1, new Float32Array(16), 4, new Float32Array(16), 4, 0, new Float32Array(15), 4),
    ).toThrow(/sgemm: C has 15 elements, needs at least 16/);
    expect(() =>
      k.attentionFwd(
        new Float32Array(8),
        new Float32Array(8),
        new Float32Array(8),
        new Float32Array(8),
        new Float32Array(1),
        1,
        2,
        1,
        1,
        4,
        4,
        1,
      ),
    ).toThrow(/attentionFwd: lse has 1 elements, needs at least 2/);
  });

  it('wrong element types, bad GQA ratios and out-of-range indices are reported', () => {
    expect(() =>
      k.add(new Float64Array(2) as unknown as Float32Array, new Float32Array(2), new Float32Array(2), 2),
    ).toThrow(/add: a must be a Float32Array/);
    expect(() =>
      k.attentionFwd(
        new Float32Array(24),
        new Float32Array(16),
        new Float32Array(16),
        new Float32Array(24),
        new Float32Array(6),
        1,
        2,
        3,
        2,
        4,
        4,
        1,
      ),
    ).toThrow(/Hq = 3 must be a positive multiple of Hkv = 2/);
    expect(() => k.crossEntropyFwd(new Float32Array(6), Int32Array.of(1, 3), new Float32Array(2), 2, 3)).toThrow(
      /labels\[1\] = 3 is outside \[0, 3\)/,
    );
    expect(() => k.gatherRows(new Float32Array(6), Int32Array.of(0, -1), new Float32Array(6), 2, 3, null)).toThrow(
      /idx\[1\] = -1/,
    );
    expect(() => k.embeddingBwd(new Float32Array(6), Int32Array.of(0, 2), new Float32Array(6), 2, 3)).toThrow(
      /ids\[1\] = 2 is outside \[0, 2\)/,
    );
    expect(() =>
      k.adamw(
        new Float32Array(1),
        new Float32Array(1),
        new Float32Array(1),
        new Float32Array(1),
        1,
        1e-3,
        0.9,
        0.95,
        1e-8,
        0,
        0,
      ),
    ).toThrow(/step = 0/);
  });

  it('empty work is a no-op: zero rows (an expert with no tokens), zero-length sequences', () => {
    const out = new Float32Array(0);
    k.gatherRows(new Float32Array(8), new Int32Array(0), out, 0, 4, new Float32Array(0));
    k.scatterAddRows(new Float32Array(0), new Int32Array(0), new Float32Array(8), 0, 4, null);
    k.attentionFwd(out, out, out, out, out, 1, 0, 2, 1, 16, 16, 0.25);
    k.attentionBwd(out, out, out, out, out, out, out, out, out, 1, 0, 2, 1, 16, 16, 0.25);
    k.sgemm(false, false, 0, 5, 3, 1, out, 3, new Float32Array(15), 5, 0, out, 5);
    expect(k.crossEntropyFwd(out, new Int32Array(0), out, 0, 10)).toBe(0);
  });
});
