// `npm run bench:trace`: what tracing costs and how the views scale.
//   recorder_*_ns_per_event   TraceRecorder.record on the hot path: ring only, and streaming JSONL (serialisation
//                             and write amortised), net of the loop's own cost (a no-op sink in the same run)
//   trace_bytes_per_step      trace.json bytes per training step of the synthetic 4-rank EP run (all ranks);
//                             also the per-rank JSONL and timeline.html bytes per step
//   timeline_load_ms_200k     Chromium (Debian's, headless): navigation start → first frame drawn, 200k events
//   trace_overhead            1 − tps(on)/tps(off): the debug job (configs/debug_ep4.toml: 4 ranks on the threads
//                             transport, EP 4 + FSDP 4) run by the trainer with `[trace] enable` true vs false,
//                             alternating runs (off, on, off, on, …), tokens/s of every step after the first, pooled
//                             per setting, medians; target ≤ 0.03
// Options: --no-browser (skip the Chromium measurement), --reps N (default 5), --pairs N (default 3) and
// --steps N (default 8) of the overhead measurement, --no-overhead (skip it).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { nullSink, type EventSink, type TraceEvent } from '../../src/protocols/events.ts';
import { TraceRecorder } from '../../src/trace/recorder.ts';
import { runPaths } from '../../src/trace/run-dir.ts';
import { viewRun } from '../../src/trace/view.ts';
import { generateSyntheticRun } from '../../test/fixtures/trace/synthetic.ts';
import { CHROMIUM, launchChromium } from '../../test/fixtures/trace/chromium.ts';
import { writeSyntheticRun } from '../../test/fixtures/trace/write-run.ts';
import { runTraining } from '../../src/train/trainer.ts';
import { ROOT, loadNote, machineInfo, median, range, timeRuns, writeReport, type BenchResult } from './common.ts';

function recordLoop(sink: EventSink, pool: readonly TraceEvent[], n: number): void {
  const m = pool.length - 1; // power of two minus one
  for (let i = 0; i < n; i++) sink.record(pool[i & m]!);
}

function recorderBench(reps: number): { results: BenchResult[]; notes: string[] } {
  const run = generateSyntheticRun({ ranks: 1, steps: 2, microbatches: 2, layers: 4, seed: 5 });
  const pool = run.events.slice(0, 1024);
  if (pool.length < 1024) throw new Error('synthetic run too small for the recorder pool');
  const N = 1_000_000;
  const ns = (ms: number[]) => (median(ms) * 1e6) / N;
  const base = ns(timeRuns(() => recordLoop(nullSink, pool, N), reps, 2));
  const ring = ns(
    timeRuns(
      () => {
        const rec = new TraceRecorder({ rank: 0 });
        recordLoop(rec, pool, N);
      },
      reps,
      2,
    ),
  );
  const dir = mkdtempSync(join(tmpdir(), 'bench-trace-rec-'));
  let bytes = 0;
  const jsonl = ns(
    timeRuns(
      () => {
        const rec = new TraceRecorder({ rank: 0, file: join(dir, 'rank-0.jsonl'), flushIntervalMs: 0 });
        recordLoop(rec, pool, N);
        rec.close();
        bytes = rec.bytesWritten;
      },
      reps,
      1,
    ),
  );
  rmSync(dir, { recursive: true, force: true });
  return {
    results: [
      {
        name: 'recorder_ring_ns_per_event',
        value: ring - base,
        unit: 'ns',
        note: `raw ${ring.toFixed(1)} ns, loop ${base.toFixed(1)} ns`,
      },
      {
        name: 'recorder_jsonl_ns_per_event',
        value: jsonl - base,
        unit: 'ns',
        note: `raw ${jsonl.toFixed(1)} ns; JSON.stringify + write(2) per 4096 events`,
      },
      { name: 'recorder_jsonl_bytes_per_event', value: bytes / N, unit: 'B' },
    ],
    notes: [],
  };
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir)) n += statSync(join(dir, f)).size;
  return n;
}

function bytesBench(out: string): BenchResult[] {
  const steps = 4;
  const run = generateSyntheticRun({ ranks: 4, steps, microbatches: 2, layers: 4, seed: 7 });
  const dir = join(out, 'trace-bytes');
  writeSyntheticRun(dir, run);
  const v = viewRun(dir);
  if (v.traceErrors.length) throw new Error(`trace.json of the synthetic run is invalid: ${v.traceErrors[0]}`);
  const p = runPaths(dir);
  return [
    {
      name: 'trace_bytes_per_step',
      value: statSync(p.trace).size / steps,
      unit: 'B',
      note: '4 ranks × 2 microbatches × 4 layers, EP a2a + FSDP',
    },
    { name: 'events_jsonl_bytes_per_step', value: dirBytes(p.events) / steps, unit: 'B' },
    { name: 'timeline_html_bytes_per_step', value: statSync(p.timeline).size / steps, unit: 'B' },
    { name: 'trace_events_per_step', value: run.events.length / steps, unit: 'events' },
  ];
}

async function loadBench(out: string, reps: number): Promise<{ results: BenchResult[]; notes: string[] }> {
  if (!existsSync(CHROMIUM))
    return {
      results: [],
      notes: [`timeline_load_ms_200k skipped: ${CHROMIUM} not installed (scripts/setup.sh installs it)`],
    };
  const run = generateSyntheticRun({ ranks: 4, steps: 12, microbatches: 8, layers: 8, seed: 3 });
  const dir = join(out, 'trace-200k');
  writeSyntheticRun(dir, run);
  const t0 = performance.now();
  viewRun(dir, { validate: false });
  const viewMs = performance.now() - t0;
  const { ctx, profile } = await launchChromium('bench-trace-chromium-', { width: 1400, height: 900 });
  const loads: number[] = [];
  const frames: number[] = [];
  let slices = 0;
  try {
    const url = pathToFileURL(runPaths(dir).timeline).href;
    for (let i = 0; i < reps + 1; i++) {
      const page = await ctx.newPage();
      await page.goto(url);
      await page.waitForFunction(
        () => (globalThis as unknown as { __timeline?: { ready: boolean } }).__timeline?.ready === true,
        null,
        { timeout: 60_000 },
      );
      const r = await page.evaluate(() => {
        const a = (
          globalThis as unknown as {
            __timeline: { loadMs: number; redraw(): void; stats: { lastFrameMs: number; slices: number } };
          }
        ).__timeline;
        const f: number[] = [];
        for (let k = 0; k < 5; k++) {
          a.redraw();
          f.push(a.stats.lastFrameMs);
        }
        f.sort((x, y) => x - y);
        return { load: a.loadMs, frame: f[2]!, slices: a.stats.slices };
      });
      await page.close();
      if (i === 0) continue; // warm-up: first start of the renderer
      loads.push(r.load);
      frames.push(r.frame);
      slices = r.slices;
    }
  } finally {
    await ctx.close();
    rmSync(profile, { recursive: true, force: true });
  }
  return {
    results: [
      {
        name: 'timeline_load_ms_200k',
        value: median(loads),
        unit: 'ms',
        note: `${run.events.length} events, ${slices} slices; navigation → first frame`,
      },
      { name: 'timeline_frame_ms_200k', value: median(frames), unit: 'ms', note: 'full-run view redraw' },
      { name: 'view_ms_200k', value: viewMs, unit: 'ms', note: 'Node: load JSONL, model, trace.json, timeline.html' },
    ],
    notes: [],
  };
}

/** Per-step tokens/s (steps after the first, mean over ranks) of one debug-job run. */
async function debugJobTps(
  dump: string,
  trace: boolean,
  steps: number,
  i: number,
): Promise<{ tps: number[]; eventsBytes: number }> {
  const name = `overhead-${trace ? 'on' : 'off'}-${i}`;
  rmSync(join(dump, name), { recursive: true, force: true });
  const out = await runTraining({ quiet: true }, [
    '--trace.enable',
    String(trace),
    '--training.steps',
    String(steps),
    '--metrics.log_freq',
    '1',
    '--job.dump_folder',
    dump,
    '--job.run_name',
    name,
  ]);
  if (!out) throw new Error('bench:trace: the debug job did not run');
  const recs = readFileSync(join(out.runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  const tps: number[] = [];
  for (let s = 2; s <= steps; s++) {
    const rs = recs.filter((r) => r.step === s);
    tps.push(rs.reduce((a, r) => a + r['throughput(tps)']!, 0) / rs.length);
  }
  const ev = runPaths(out.runDir).events;
  const eventsBytes = trace && existsSync(ev) ? dirBytes(ev) : 0;
  rmSync(out.runDir, { recursive: true, force: true });
  return { tps, eventsBytes };
}

async function overheadBench(
  out: string,
  pairs: number,
  steps: number,
): Promise<{ results: BenchResult[]; notes: string[] }> {
  const dump = join(out, 'trace-overhead');
  mkdirSync(dump, { recursive: true });
  const off: number[] = [];
  const on: number[] = [];
  const runOff: number[] = [];
  const runOn: number[] = [];
  let bytes = 0;
  const notes = [loadNote('before the overhead runs')];
  for (let i = 0; i < pairs; i++) {
    // Alternate which setting goes first, so a load trend does not favour one side.
    for (const trace of i % 2 === 0 ? [false, true] : [true, false]) {
      const r = await debugJobTps(dump, trace, steps, i);
      (trace ? on : off).push(...r.tps);
      (trace ? runOn : runOff).push(median(r.tps));
      if (trace) bytes = r.eventsBytes;
    }
  }
  notes.push(loadNote('after the overhead runs'));
  const mOff = median(off);
  const mOn = median(on);
  return {
    results: [
      {
        name: 'trace_overhead',
        value: 1 - mOn / mOff,
        unit: 'fraction',
        target: 0.03,
        note: `tps off ${mOff.toFixed(0)} vs on ${mOn.toFixed(0)} (per-rank, median of ${off.length} steps each); run medians off ${range(runOff, 0)}, on ${range(runOn, 0)}`,
      },
      { name: 'debug_job_tps_trace_off', value: mOff, unit: 'tokens/s/rank' },
      { name: 'debug_job_tps_trace_on', value: mOn, unit: 'tokens/s/rank' },
      {
        name: 'debug_job_events_jsonl_bytes_per_step',
        value: bytes / steps,
        unit: 'B',
        note: 'all 4 ranks, real run (not the synthetic one)',
      },
    ],
    notes,
  };
}

export async function run(argv: string[]): Promise<void> {
  const reps = Number(argv[argv.indexOf('--reps') + 1]) || 5;
  const browser = !argv.includes('--no-browser');
  const pairs = Number(argv[argv.indexOf('--pairs') + 1]) || 3;
  const steps = Number(argv[argv.indexOf('--steps') + 1]) || 8;
  const overhead = argv.includes('--no-overhead')
    ? {
        results: [{ name: 'trace_overhead', value: Number.NaN, unit: 'fraction', note: 'skipped (--no-overhead)' }],
        notes: [],
      }
    : await overheadBench(join(ROOT, 'outputs', 'bench'), pairs, steps);
  const out = join(ROOT, 'outputs', 'bench');
  mkdirSync(out, { recursive: true });
  const rec = recorderBench(reps);
  const bytes = bytesBench(out);
  const load = browser
    ? await loadBench(out, reps)
    : { results: [], notes: ['timeline_load_ms_200k skipped (--no-browser)'] };
  writeReport({
    bench: 'trace',
    when: new Date().toISOString(),
    machine: machineInfo('n/a'),
    config: {
      reps,
      recorder_flush_every: 4096,
      synthetic: { ranks: 4, ep: 4, strategy: 'a2a' },
      overhead: { config: 'configs/debug_ep4.toml', pairs, steps },
    },
    results: [...rec.results, ...bytes, ...load.results, ...overhead.results],
    notes: [...rec.notes, ...load.notes, ...overhead.notes],
  });
}
