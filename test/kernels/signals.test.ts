// oneDNN 2.6's f32 gemm:jit kernels move rsp into a heap workspace while they run, so a signal arriving then (the
// V8 profiler's SIGPROF, a SIGTERM) writes its frame into the heap: `node --cpu-prof` on a DeepSeek-V3 run aborted
// with "corrupted size vs. prev_size" every time (uxlfoundation/oneDNN#4845). The kernels route those shapes to
// BLAS (native/kernels/src/dnnl.cc, signalUnsafe). This runs them for 2 s under a 100 µs profiler in a child.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

describe('matmuls interrupted by signals', () => {
  it('strided f32, runtime-rows bf16 and bf16-output products survive a 100 µs CPU profiler and stay correct', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moe-sig-'));
    try {
      const r = spawnSync(
        process.execPath,
        [
          '--cpu-prof',
          '--cpu-prof-interval',
          '100',
          '--cpu-prof-dir',
          dir,
          '--import',
          'tsx',
          'test/kernels/signal-matmuls.ts',
          '2',
        ],
        { encoding: 'utf8', timeout: 60_000, env: { ...process.env, MOE_ACTORS_MATMUL: 'auto' } },
      );
      expect(r.stderr + r.stdout).not.toMatch(/corrupted|free\(\)|double free/);
      expect({ status: r.status, signal: r.signal }).toEqual({ status: 0, signal: null });
      expect(r.stdout.trim()).toBe('ok');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
