import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Communicator } from '../../src/comm/communicator.ts';
import { launch } from '../../src/comm/launch.ts';
import { addonDir } from '../../src/comm/mpi/native.ts';
import { spawnMpi } from '../../src/comm/mpi/spawn.ts';
import { estimateClockOffsets, offsetsFromSamples, type ClockOffset } from '../../src/trace/clock.ts';
import { loadRun } from '../../src/trace/run-dir.ts';
import type { ClockArgs } from './clock-rank.ts';

/**
 * N ranks in one process whose clocks disagree by known offsets; barrier releases each rank after its own random
 * delay (as a real barrier's fan-out does), so the estimate has real asymmetry to cope with.
 */
function skewedWorld(offsets: number[], seed = 1) {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const n = offsets.length;
  let waiting: (() => void)[] = [];
  const gathers: { arr: Float64Array[]; done: (() => void)[] } = { arr: [], done: [] };
  const barrier = () =>
    new Promise<void>((resolve) => {
      waiting.push(resolve);
      if (waiting.length === n) {
        const all = waiting;
        waiting = [];
        for (const w of all) setTimeout(w, rnd() * 3);
      }
    });
  const comms = offsets.map((_, rank) => {
    const comm = {
      rank,
      size: n,
      ranks: [...Array(n).keys()],
      name: 'world',
      backend: 'test/skewed',
      capabilities: { barrier: true },
      barrier,
      allGather: async (send: Float64Array, recv: Float64Array) => {
        gathers.arr[rank] = send.slice();
        await new Promise<void>((resolve) => {
          gathers.done.push(resolve);
          if (gathers.done.length === n) {
            const d = gathers.done;
            gathers.done = [];
            for (const fn of d) fn();
          }
        });
        for (let r = 0; r < n; r++) recv.set(gathers.arr[r]!, r * send.length);
      },
    };
    return comm as unknown as Communicator;
  });
  const clocks = offsets.map((o) => () => performance.now() + o);
  return { comms, clocks };
}

describe('clock alignment', () => {
  it('recovers per-rank offsets within the reported uncertainty', async () => {
    const offsets = [0, 1234.5, -87.25, 40_000];
    const { comms, clocks } = skewedWorld(offsets);
    const results = await Promise.all(
      comms.map((c, r) => estimateClockOffsets(c, { rounds: 12, warmup: 1, now: clocks[r] })),
    );
    // Every rank computes the same table.
    for (const res of results) expect(res.map((o) => o.offsetMs)).toEqual(results[0]!.map((o) => o.offsetMs));
    for (const o of results[0]!) {
      const truth = offsets[o.rank]! - offsets[0]!;
      expect(Math.abs(o.offsetMs - truth)).toBeLessThanOrEqual(o.uncertaintyMs + 1e-9);
      // One process, timer-driven barrier: the bound is a few ms at worst, not the offsets' size.
      expect(o.uncertaintyMs).toBeLessThan(5);
    }
  });

  it('interval arithmetic on hand-made samples', () => {
    // Rank 1 is 10 ms ahead. Round 0: rank 0 reads a=0, b=2; rank 1 reads a=10.5, b=11.5 (real 0.5..1.5).
    const samples = new Float64Array([0, 2, 10.5, 11.5]);
    const [r0, r1] = offsetsFromSamples(samples, 2, 1);
    expect(r0!.offsetMs).toBe(0);
    // δ ∈ [a1 − b0, b1 − a0] = [8.5, 11.5]
    expect(r1!.offsetMs).toBeCloseTo(10, 12);
    expect(r1!.uncertaintyMs).toBeCloseTo(1.5, 12);
  });

  it('rejects samples that no offset can explain', () => {
    // Rank 1's clock jumps 5 ms between rounds: round 0 says δ ∈ [9, 11], round 1 says δ ∈ [14, 16].
    // Layout [rank][round][a, b].
    const samples = new Float64Array([0, 1, 20, 21, 10, 11, 35, 36]);
    expect(() => offsetsFromSamples(samples, 2, 2)).toThrow(/empty interval for rank 1/);
  });
});

describe('clock alignment on real transports', () => {
  const here = dirname(fileURLToPath(import.meta.url));
  const entry = { module: join(here, 'clock-rank.ts') };

  it('inproc: skewed rank clocks land on rank 0’s clock after loadRun', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trace-clock-inproc-'));
    const skew = [0, 5000, -250, 123.5];
    const res = await launch<ClockArgs, ClockOffset>({ transport: 'inproc', size: 4, timeoutMs: 10_000 }, entry, {
      dir,
      skew,
    });
    for (const o of res.outcomes) {
      expect(o.ok, o.ok ? '' : o.error).toBe(true);
      if (!o.ok) continue;
      expect(Math.abs(o.value.offsetMs - skew[o.rank]!)).toBeLessThanOrEqual(o.value.uncertaintyMs + 1e-6);
    }
    // The barrier-exit events, merged: within a few ms of each other instead of 5 s apart.
    const ts = loadRun(dir).events.map((e) => e.t);
    expect(Math.max(...ts) - Math.min(...ts)).toBeLessThan(5);
    rmSync(dir, { recursive: true, force: true });
  });

  it('threads: worker threads share one clock (offsets ≈ 0)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trace-clock-threads-'));
    const res = await launch<ClockArgs, ClockOffset>({ transport: 'threads', size: 2, timeoutMs: 20_000 }, entry, {
      dir,
      skew: [0, 0],
    });
    for (const o of res.outcomes) {
      expect(o.ok, o.ok ? '' : o.error).toBe(true);
      if (!o.ok) continue;
      expect(Math.abs(o.value.offsetMs)).toBeLessThanOrEqual(o.value.uncertaintyMs + 0.05);
      expect(o.value.uncertaintyMs).toBeLessThan(50);
    }
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);
});

// Skipped only where the native build recorded that MPICH is absent (as test/comm/mpi.test.ts does).
const marker = join(addonDir(), 'UNAVAILABLE');
const mpichMissing = existsSync(marker) && /not found/.test(readFileSync(marker, 'utf8'));

describe.skipIf(mpichMissing)('clock alignment under mpiexec.mpich', () => {
  it('two processes with skewed clocks: the merged run is on rank 0’s clock', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trace-clock-mpi-'));
    const skew = [0, 777.25];
    const exits = 5;
    const module = join(dirname(fileURLToPath(import.meta.url)), 'clock-rank.ts');
    const res = await spawnMpi<ClockOffset>({
      n: 2,
      entry: { module },
      args: { dir, skew, exits },
      world: { timeoutMs: 20_000 },
      jobTimeoutMs: 60_000,
    });
    for (const o of res.outcomes) {
      expect(o.ok, o.ok ? '' : o.error).toBe(true);
      if (!o.ok) continue;
      expect(Math.abs(o.value.offsetMs - skew[o.rank]!)).toBeLessThanOrEqual(o.value.uncertaintyMs + 1e-6);
      expect(o.value.uncertaintyMs).toBeLessThan(50);
    }
    // The barrier exits, merged: every pair far closer than the 777 ms skew, and the closest within 50 ms. One exit
    // alone can be late by a scheduler slice on a loaded 2-core machine (66 ms was seen in CI).
    const events = loadRun(dir).events;
    expect(events).toHaveLength(2 * exits);
    const at = (rank: number, i: number) => events.find((e) => e.rank === rank && 'step' in e && e.step === i)!.t;
    const gaps = Array.from({ length: exits }, (_, i) => Math.abs(at(1, i) - at(0, i)));
    expect(Math.max(...gaps)).toBeLessThan(skew[1]! / 2);
    expect(Math.min(...gaps)).toBeLessThan(50);
    rmSync(dir, { recursive: true, force: true });
  }, 90_000);
});
