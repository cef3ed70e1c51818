// The shared conformance program on the inproc transport: every world size 1–8, several scheduler seeds, every
// profile, and buffers on SharedArrayBuffer. The same program runs on threads and under mpiexec.
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { launch } from '../../src/comm/launch.ts';
import type { ConformanceArgs, ConformanceSummary } from './programs/conformance.ts';

const entry = { module: fileURLToPath(new URL('./programs/conformance.ts', import.meta.url)) };

async function run(
  size: number,
  seed: number,
  args: ConformanceArgs,
  profile?: 'full' | 'xccl-2025' | 'xccl-2026' | 'oneccl-v2',
  ranksPerNode?: number,
) {
  const res = await launch<ConformanceArgs, ConformanceSummary>(
    { transport: 'inproc', size, seed, timeoutMs: 5000, profile, ranksPerNode },
    entry,
    args,
  );
  const failed = res.outcomes.filter((o) => !o.ok);
  if (failed.length)
    throw new Error(
      `${failed.map((o) => (o.ok ? '' : `rank ${o.rank}: ${o.error}`)).join('\n')}\n${res.diagnosis ?? ''}`,
    );
  return res.outcomes.map((o) => (o.ok ? o.value : undefined)!);
}

describe('conformance on inproc', () => {
  for (let size = 1; size <= 8; size++) {
    it(`world size ${size}, seeds 1..3`, async () => {
      for (const seed of [1, 2, 3]) {
        const summaries = await run(size, seed, { seed: 100 + seed });
        expect(summaries).toHaveLength(size);
        for (const s of summaries) {
          expect(s.size).toBe(size);
          // Every op was checked at least once on every rank, and nothing was denied under the full profile.
          for (const op of [
            'all_gather',
            'all_gather_v',
            'reduce_scatter',
            'all_reduce',
            'all_to_all_v',
            'broadcast',
            'barrier',
            'split',
            'free',
          ]) {
            expect(s.byOp[op], op).toBeGreaterThan(0);
          }
          expect(s.unsupported).toBe(0);
        }
      }
    });
  }

  it('buffers on SharedArrayBuffer, two rounds', async () => {
    const s = await run(4, 9, { seed: 5, shared: true, rounds: 2 });
    expect(s[0]!.checks).toBeGreaterThan(500);
  });

  it('xccl-2025: all_to_all_v, all_gather_v and premul_sum are denied as unsupported; the rest conforms', async () => {
    const s = await run(4, 1, { seed: 6 }, 'xccl-2025');
    expect(s[0]!.byOp.all_to_all_v).toBeUndefined();
    expect(s[0]!.byOp.all_gather_v).toBeUndefined();
    expect(s[0]!.unsupported).toBeGreaterThan(0);
    expect(s[0]!.byOp.all_reduce).toBeGreaterThan(0);
  });

  it('xccl-2026 over two nodes: premul_sum denied on groups spanning nodes only', async () => {
    const twoNodes = await run(4, 1, { seed: 7 }, 'xccl-2026', 2);
    const oneNode = await run(4, 1, { seed: 7 }, 'xccl-2026');
    expect(twoNodes[0]!.unsupported).toBeGreaterThan(0);
    expect(oneNode[0]!.unsupported).toBe(0);
  });

  it('oneccl-v2: only equal-count all_to_all runs', async () => {
    const s = await run(3, 1, { seed: 8 }, 'oneccl-v2');
    expect(s[0]!.byOp.all_to_all_v).toBeGreaterThan(0);
    expect(s[0]!.unsupported).toBeGreaterThan(0);
  });
});
