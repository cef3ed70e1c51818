import { describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  createMetricsLogger,
  createProgress,
  fmtCommas,
  fmtFloat,
  formatConsoleLine,
  measureSgemmPeak,
  MetricsLogger,
  pyFixed,
  pyRound,
  resolvePeakFlops,
  ThroughputMeter,
  useColor,
} from '../../src/train/metrics/index.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';

const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, '');

describe('Python number formatting (oracle: CPython 3.11 f-strings)', () => {
  // [x, {x:8.5f}, {x:7.4f}, {x:.2f}, {x:,.2f}, {x:.0f}]
  const table: [number, string, string, string, string, string][] = [
    [0.125, ' 0.12500', ' 0.1250', '0.12', '0.12', '0'],
    [2.5, ' 2.50000', ' 2.5000', '2.50', '2.50', '2'],
    [3.5, ' 3.50000', ' 3.5000', '3.50', '3.50', '4'],
    [-0.125, '-0.12500', '-0.1250', '-0.12', '-0.12', '-0'],
    [1.005, ' 1.00500', ' 1.0050', '1.00', '1.00', '1'],
    [0.0049999, ' 0.00500', ' 0.0050', '0.00', '0.00', '0'],
    [7.891234567, ' 7.89123', ' 7.8912', '7.89', '7.89', '8'],
    [NaN, '     nan', '    nan', 'nan', 'nan', 'nan'],
    [Infinity, '     inf', '    inf', 'inf', 'inf', 'inf'],
    [-Infinity, '    -inf', '   -inf', '-inf', '-inf', '-inf'],
    [12345.675, '12345.67500', '12345.6750', '12345.67', '12,345.67', '12346'],
    [0.375, ' 0.37500', ' 0.3750', '0.38', '0.38', '0'],
    [1e-7, ' 0.00000', ' 0.0000', '0.00', '0.00', '0'],
    [-0, '-0.00000', '-0.0000', '-0.00', '-0.00', '-0'],
    [99999.995, '99999.99500', '99999.9950', '99999.99', '99,999.99', '100000'],
  ];
  it.each(table)('%s', (x, f85, f74, f2, c2, f0) => {
    expect(fmtFloat(x, 8, 5)).toBe(f85);
    expect(fmtFloat(x, 7, 4)).toBe(f74);
    expect(pyFixed(x, 2)).toBe(f2);
    expect(fmtCommas(x, 2)).toBe(c2);
    expect(pyFixed(x, 0)).toBe(f0);
  });

  it('round() ties to even and {n:,} groups thousands', () => {
    const cases: [number, string][] = [
      [0.5, '0'],
      [1.5, '2'],
      [2.5, '2'],
      [12344.5, '12,344'],
      [12345.5, '12,346'],
      [1234567.49, '1,234,567'],
      [-2.5, '-2'],
      [999.5, '1,000'],
      [-0.3, '0'],
    ];
    for (const [x, want] of cases) expect(fmtCommas(pyRound(x))).toBe(want);
  });
});

describe("torchtitan's console line", () => {
  it('matches the Python f-string field for field (two spaces between fields)', () => {
    const f = {
      step: 1,
      loss: 7.891234567,
      gradNorm: 1.23454,
      memoryGiB: 1.2345,
      memoryPct: 1.5512,
      tps: 12345.4,
      tflops: 0.93456,
      mfuPct: 0.2999,
    };
    expect(formatConsoleLine(f, false)).toBe(
      'step:  1  loss:  7.89123  grad_norm:  1.2345  memory:  1.23GiB(1.55%)  tps: 12,345  tflops: 0.93  mfu: 0.30%',
    );
    const g = {
      step: 120,
      loss: 10.5,
      gradNorm: 123.45678,
      memoryGiB: 123.456,
      memoryPct: 12.345,
      tps: 1234567.5,
      tflops: 1234.5678,
      mfuPct: 100,
    };
    expect(formatConsoleLine(g, false)).toBe(
      'step: 120  loss: 10.50000  grad_norm: 123.4568  memory: 123.46GiB(12.35%)  tps: 1,234,568  tflops: 1,234.57  mfu: 100.00%',
    );
  });

  it('colours each field when asked, and only then', () => {
    const f = { step: 3, loss: 2, gradNorm: 0.5, memoryGiB: 0.1, memoryPct: 0.2, tps: 10, tflops: 0, mfuPct: 0 };
    const colored = formatConsoleLine(f, true);
    expect(colored).toContain('\x1b[31mstep:  3\x1b[39m');
    expect(colored).toContain('\x1b[32mloss:  2.00000\x1b[39m');
    expect(colored).toContain('\x1b[35mmfu: 0.00%\x1b[39m');
    expect(strip(colored)).toBe(formatConsoleLine(f, false));
    expect(formatConsoleLine(f, false)).not.toContain('\x1b');
    expect(useColor(false, { isTTY: true })).toBe(true);
    expect(useColor(true, { isTTY: true })).toBe(false);
    expect(useColor(false, { isTTY: false })).toBe(false);
  });
});

describe('throughput', () => {
  it('tps = tokens loaded since the last log / Δt; the first window starts at construction', () => {
    let t = 1000;
    const m = new ThroughputMeter(() => t);
    t += 4000; // setup time counts, as in torchtitan
    m.addBatch(1024, 10);
    m.addBatch(1024, 30);
    const w = m.take();
    expect(w.dtS).toBeCloseTo(4, 12);
    expect(w.tps).toBeCloseTo(512, 9);
    expect(w.dataLoadingS).toBeCloseTo(0.02, 12);
    expect(w.dataLoadingPct).toBeCloseTo(1, 12);
    t += 500;
    m.addBatch(100);
    expect(m.take().tps).toBeCloseTo(200, 9);
  });
});

describe('MetricsLogger', () => {
  const dir = mkdtempSync(join(tmpdir(), 'moe-metrics-'));

  it('logs at step 1 and every log_freq, prints on its rank, appends torchtitan-keyed JSONL records, resets peaks', () => {
    let t = 0;
    const alloc = new Allocator();
    const lines: string[] = [];
    const jsonl = join(dir, 'run', 'metrics.jsonl');
    const mk = (rank: number, print: boolean) =>
      new MetricsLogger({
        rank,
        logFreq: 5,
        flopsPerToken: 1e9,
        peak: { flops: 1e12, source: 'test' },
        print,
        color: false,
        jsonlPath: jsonl,
        memoryStats: () => alloc.stats(),
        resetMemoryPeak: () => alloc.resetPeak(),
        out: (l) => lines.push(l),
        now: () => t,
        totalMemoryBytes: 2 ** 34,
      });
    const l0 = mk(0, true);
    const l1 = mk(1, false);
    expect([1, 2, 5, 9, 10].map((s) => l0.shouldLog(s))).toEqual([true, false, true, false, true]);

    const big = alloc.f32('activations', 2 ** 28 / 4); // 256 MiB
    alloc.f32('params', 2 ** 26 / 4); // 64 MiB
    alloc.free(big);
    t = 2000;
    l0.addBatch(4096, 5);
    l0.addPhase('compute', 1500);
    l0.addCommBytes('ep', 1000);
    const r = l0.log(1, {
      globalAvgLoss: 7.5,
      globalMaxLoss: 7.9,
      gradNorm: 1.5,
      lr: 4e-3,
      nTokensSeen: 16384,
      phasesMs: { compute: 100, waiting: 50 },
      commBytes: { ep: 24, fsdp: 7 },
    });
    l1.addBatch(4096);
    l1.log(1, { globalAvgLoss: 7.5, globalMaxLoss: NaN, gradNorm: 1.5, lr: 4e-3 });

    expect(r['throughput(tps)']).toBeCloseTo(2048, 9);
    expect(r.tflops).toBeCloseTo(2.048, 9);
    expect(r['mfu(%)']).toBeCloseTo(204.8, 9);
    expect(r['time_metrics/end_to_end(s)']).toBeCloseTo(2 / 5, 12);
    expect(r['memory/max_active(GiB)']).toBeCloseTo(320 / 1024, 12);
    expect(r['memory/max_active(%)']).toBeCloseTo((100 * 320 * 2 ** 20) / 2 ** 34, 9);
    expect(r['memory/max_active/activations(GiB)']).toBeCloseTo(0.25, 12);
    expect(r['time_phases/compute(ms)']).toBe(1600);
    expect(r['time_phases/waiting(ms)']).toBe(50);
    expect(r['comm/ep(bytes)']).toBe(1024);
    expect(r['comm/fsdp(bytes)']).toBe(7);
    expect(r.n_tokens_seen).toBe(16384);
    expect(alloc.stats().peakTotal).toBe(2 ** 26); // reset to live after the log

    expect(lines).toEqual([
      'step:  1  loss:  7.50000  grad_norm:  1.5000  memory:  0.31GiB(1.95%)  tps: 2,048  tflops: 2.05  mfu: 204.80%',
    ]);
    const recs = readFileSync(jsonl, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(recs.map((x) => x.rank)).toEqual([0, 1]);
    expect(recs[1]['loss_metrics/global_max_loss']).toBeNull();
    for (const k of [
      'loss_metrics/global_avg_loss',
      'loss_metrics/global_max_loss',
      'grad_norm',
      'throughput(tps)',
      'tflops',
      'mfu(%)',
      'time_metrics/end_to_end(s)',
      'time_metrics/data_loading(s)',
      'memory/max_active(GiB)',
      'lr',
    ]) {
      expect(recs[0]).toHaveProperty([k]);
    }
    // The next window has no leftover phases or bytes.
    t = 3000;
    const r2 = l0.log(5, { globalAvgLoss: 7, globalMaxLoss: 7, gradNorm: 1, lr: 1e-3 });
    expect(r2['time_phases/compute(ms)']).toBeUndefined();
    expect(r2['throughput(tps)']).toBe(0);
  });

  it('takes log_freq, colour and JSONL from [metrics]', () => {
    const cfg = loadJobConfig(null, ['--metrics.log_freq', '3', '--metrics.save_jsonl', 'false']);
    const lines: string[] = [];
    const l = createMetricsLogger(cfg, {
      rank: 2,
      runDir: dir,
      flopsPerToken: 1,
      peak: { flops: 1, source: 't' },
      out: (x) => lines.push(x),
    });
    expect(l.opts.jsonlPath).toBeNull();
    expect(l.opts.print).toBe(false);
    expect(l.shouldLog(3)).toBe(true);
    expect(l.shouldLog(4)).toBe(false);
    const tty = (isTTY: boolean, off = false) =>
      createMetricsLogger(loadJobConfig(null, off ? ['--metrics.disable_color_printing'] : []), {
        rank: 0,
        runDir: dir,
        flopsPerToken: 1,
        peak: { flops: 1, source: 't' },
        stdoutIsTTY: isTTY,
      }).opts.color;
    expect([tty(true), tty(false), tty(true, true)]).toEqual([true, false, false]);
  });
});

describe('peak FLOP/s', () => {
  it('measures the sgemm rate with the kernels and restores their thread count', async () => {
    const { refKernels, getKernels } = await import('../../src/tensor/kernels.ts');
    const ref = measureSgemmPeak(refKernels, { n: 48, budgetMs: 20 });
    expect(ref.impl).toBe('ts');
    expect(ref.trials.length).toBeGreaterThanOrEqual(3);
    expect(ref.gflops).toBe(Math.max(...ref.trials));
    expect(ref.gflops).toBeGreaterThan(0.01);
    let native;
    try {
      native = getKernels();
    } catch {
      return; // the native addon is not built on this machine: the TS reference run above covers the logic
    }
    const before = native.blasInfo().threads;
    const p = measureSgemmPeak(native, { n: 256, budgetMs: 50, threads: 1 });
    expect(native.blasInfo().threads).toBe(before);
    expect(p.threads).toBe(1);
    expect(p.gflops).toBeGreaterThan(ref.gflops);
  });

  it('splits the node peak across its ranks unless metrics.peak_flops is set', () => {
    expect(resolvePeakFlops({ configPeakFlops: 0, nodeSgemmGflops: 200, ranksOnNode: 4 }).flops).toBe(50e9);
    expect(resolvePeakFlops({ configPeakFlops: 3e12, nodeSgemmGflops: 200, ranksOnNode: 4 }).flops).toBe(3e12);
    expect(() => resolvePeakFlops({ configPeakFlops: 0, ranksOnNode: 1 })).toThrow(/set \[metrics\] peak_flops/);
  });
});

describe('progress', () => {
  it('prints plain lines (start, each 10 %, done) when not on a terminal', () => {
    const out: string[] = [];
    const p = createProgress('writing', 20, {
      stream: { isTTY: false, write: (s: string) => out.push(s) },
      unit: 'files',
    });
    for (let i = 0; i < 20; i++) p.increment();
    p.stop();
    p.stop();
    expect(out[0]).toBe('writing: 0/20 files\n');
    expect(out.slice(1, -1)).toEqual(
      Array.from({ length: 9 }, (_, i) => `writing: ${2 * (i + 1)}/20 files (${10 * (i + 1)}%)\n`),
    );
    expect(out.at(-1)).toMatch(/^writing: 20\/20 files done in \d+\.\ds\n$/);
    expect(out.length).toBe(11);
  });

  it('draws a cli-progress bar on a terminal', () => {
    const out: string[] = [];
    const stream = {
      isTTY: true,
      columns: 100,
      write: (s: string) => (out.push(s), true),
      cursorTo: () => true,
      clearLine: () => true,
      moveCursor: () => true,
      on: () => stream,
      removeListener: () => stream,
    };
    const p = createProgress('init', 4, { stream: stream as never });
    p.update(4);
    p.stop();
    expect(strip(out.join(''))).toMatch(/init \[.*\] 100% \| 4\/4/);
  });
});
