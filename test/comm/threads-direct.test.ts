// The threads transport reading peers' SharedArrayBuffer-backed send arrays in place (buffers.ts): the conformance
// program bit-exactly (every collective: all_gather(_v), reduce_scatter, all_reduce, all_to_all_v, broadcast) with
// every send lent (threshold 0), with lent and staged senders mixed in one call, and with 64-byte slots (many
// rounds); the lender's array reusable after its call; a missed registration sent again on request.

import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { LaunchResult } from '../../src/comm/launch.ts';
import { startThreads } from '../../src/comm/threads/launch.ts';
import type { ConformanceArgs, ConformanceSummary } from './programs/conformance.ts';
import type { DirectArgs, DirectSummary } from './programs/threads-direct.ts';

const program = (name: string) => ({ module: fileURLToPath(new URL(`./programs/${name}.ts`, import.meta.url)) });

function failures(res: LaunchResult<unknown>): string {
  return res.outcomes
    .filter((o) => !o.ok)
    .map((o) => `rank ${o.rank}: ${(o as { error: string }).error}`)
    .join('\n');
}

describe('threads transport: send arrays read in place', () => {
  it.each([2, 3, 5])('passes the conformance program bit-exactly on %i ranks with every send lent', async (size) => {
    const res = await startThreads<ConformanceArgs, ConformanceSummary>(
      { transport: 'threads', size, timeoutMs: 10_000, directMinBytes: 0 },
      program('conformance'),
      { seed: 5, shared: true },
    ).result;
    expect(failures(res)).toBe('');
  });

  it('mixes lent and staged senders in one call, with 64-byte slots (staged blocks in many rounds)', async () => {
    for (const slotBytes of [64, 8 << 20]) {
      const res = await startThreads<ConformanceArgs, ConformanceSummary>(
        { transport: 'threads', size: 4, timeoutMs: 10_000, directMinBytes: 0, slotBytes },
        program('conformance'),
        { seed: 9, sharedRanks: [0, 2] },
      ).result;
      expect(failures(res)).toBe('');
    }
  });

  it('every send lent with 64-byte slots (all_reduce in many rounds, lenders of rank >= 2 parking their block)', async () => {
    const res = await startThreads<ConformanceArgs, ConformanceSummary>(
      { transport: 'threads', size: 4, timeoutMs: 10_000, directMinBytes: 0, slotBytes: 64 },
      program('conformance'),
      { seed: 13, shared: true },
    ).result;
    expect(failures(res)).toBe('');
  });

  it('lends large SharedArrayBuffer sends by default; the lender may reuse its array once the call resolves', async () => {
    const res = await startThreads<DirectArgs, DirectSummary>(
      { transport: 'threads', size: 3, timeoutMs: 10_000 },
      program('threads-direct'),
      {
        n: 100_000,
        iters: 4,
      },
    ).result;
    expect(failures(res)).toBe('');
    for (const o of res.outcomes) {
      if (!o.ok) continue;
      expect(o.value.lentCalls).toBeGreaterThanOrEqual(12);
      expect(o.value.wantServed).toBe(true);
    }
  });

  it('stages everything through the slots when lending is off', async () => {
    const res = await startThreads<DirectArgs, DirectSummary>(
      { transport: 'threads', size: 2, timeoutMs: 10_000, directMinBytes: Infinity },
      program('threads-direct'),
      { n: 100_000, iters: 2 },
    ).result;
    expect(failures(res)).toBe('');
    for (const o of res.outcomes) if (o.ok) expect(o.value.lentCalls).toBe(0);
  });
});
