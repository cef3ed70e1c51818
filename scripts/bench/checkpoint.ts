// `npm run bench:checkpoint [-- --steps N --rounds R]`: what a checkpoint costs a step. The default job
// (configs/debug_ep4.toml: 4 ranks on worker threads, EP 4 + FSDP 4) runs with a checkpoint at every step
// ([checkpoint] interval = 1) under async_mode "disabled" (sync) and "async", and without checkpoints, the three
// alternating round after round so the machine's load drifts over all of them alike.
//
// Step time: rank 0's time_metrics/end_to_end(s) per step (log_freq 1). A checkpoint taken after step n lands in
// step n+1's window, so with interval 1 every step after the first carries one. Median over the steps after the
// second (step 1 includes setup, step 2 the pool's first write) and over rounds.
//   async_step_ratio = median step with async checkpoints / median step without checkpoints (target ≤ 1.15)
//   sync_step_ratio  = the same with sync checkpoints
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runTraining } from '../../src/train/trainer.ts';
import { ROOT, loadNote, machineInfo, median, range, writeReport } from './common.ts';

interface Opts {
  steps: number;
  rounds: number;
}

function parseArgs(argv: string[]): Opts {
  const o: Opts = { steps: 10, rounds: 2 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--steps') o.steps = Math.max(4, Number(argv[++i]));
    else if (a === '--rounds') o.rounds = Math.max(1, Number(argv[++i]));
    else throw new Error(`bench:checkpoint: unknown argument ${a} (use --steps N, --rounds R)`);
  }
  return o;
}

const MODES = {
  none: ['--checkpoint.enable', 'false'],
  sync: ['--checkpoint.enable', '--checkpoint.interval', '1', '--checkpoint.async_mode', 'disabled'],
  async: ['--checkpoint.enable', '--checkpoint.interval', '1', '--checkpoint.async_mode', 'async'],
} as const;
type Mode = keyof typeof MODES;

function stepTimes(runDir: string): { steps: number[]; blocked: number[]; write: number[] } {
  const recs = readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  const r0 = recs.filter((r) => r.rank === 0);
  return {
    steps: r0.filter((r) => r.step > 2).map((r) => r['time_metrics/end_to_end(s)']! * 1000),
    blocked: r0
      .filter((r) => typeof r['checkpoint/blocked_ms'] === 'number' && r.step > 2)
      .map((r) => r['checkpoint/blocked_ms']!),
    write: r0
      .filter((r) => typeof r['checkpoint/write_ms'] === 'number' && r.step > 2)
      .map((r) => r['checkpoint/write_ms']!),
  };
}

export async function run(argv: string[]): Promise<void> {
  const o = parseArgs(argv);
  const notes: string[] = [loadNote('at start')];
  const dump = join(ROOT, 'outputs', 'bench', 'checkpoint-runs');
  mkdirSync(dump, { recursive: true });
  const pairs: { async: number; sync: number }[] = [];
  const got: Record<Mode, { steps: number[]; blocked: number[]; write: number[]; medians: number[] }> = {
    none: { steps: [], blocked: [], write: [], medians: [] },
    sync: { steps: [], blocked: [], write: [], medians: [] },
    async: { steps: [], blocked: [], write: [], medians: [] },
  };
  let ckptBytes = 0;
  const t0 = performance.now();
  for (let round = 0; round < o.rounds; round++) {
    // Alternate the order too, so neither mode always follows the other.
    const order: Mode[] = round % 2 ? ['async', 'sync', 'none'] : ['none', 'sync', 'async'];
    for (const mode of order) {
      const name = `ckpt-${mode}-${round}`;
      rmSync(join(dump, name), { recursive: true, force: true });
      const out = await runTraining({ quiet: true }, [
        ...MODES[mode],
        '--training.steps',
        String(o.steps),
        '--metrics.log_freq',
        '1',
        '--trace.enable',
        'false',
        '--job.dump_folder',
        dump,
        '--job.run_name',
        name,
      ]);
      if (!out) throw new Error(`bench:checkpoint: ${name} did not run`);
      const t = stepTimes(out.runDir);
      got[mode].steps.push(...t.steps);
      got[mode].blocked.push(...t.blocked);
      got[mode].write.push(...t.write);
      got[mode].medians.push(median(t.steps));
      if (mode !== 'none' && !ckptBytes) {
        const m = JSON.parse(
          readFileSync(join(out.runDir, 'checkpoint', `step-${o.steps}`, 'manifest.json'), 'utf8'),
        ) as { files: { bytes: number }[] };
        ckptBytes = m.files.reduce((a, f) => a + f.bytes, 0);
      }
      rmSync(join(out.runDir, 'checkpoint'), { recursive: true, force: true });
      console.log(`round ${round + 1}/${o.rounds} ${mode}: median step ${median(t.steps).toFixed(1)} ms`);
    }
    const m = (k: Mode) => got[k].medians[round]!;
    pairs.push({ async: m('async') / m('none'), sync: m('sync') / m('none') });
  }
  const base = median(got.none.steps);
  // Each round's three runs ran back to back under the same load: the ratio is taken within a round, then the
  // median over rounds (the machine's load moves more between rounds than within one).
  const ratio = (m: 'async' | 'sync') => median(pairs.map((p) => p[m]));
  notes.push(
    `per-round ratios async ${pairs.map((p) => p.async.toFixed(3)).join(', ')}; sync ${pairs.map((p) => p.sync.toFixed(3)).join(', ')}`,
    `step ms (median, steps 3..${o.steps}, ${o.rounds} rounds): none ${base.toFixed(1)}, sync ${median(got.sync.steps).toFixed(1)}, async ${median(got.async.steps).toFixed(1)}; per-round medians none ${range(got.none.medians)}, sync ${range(got.sync.medians)}, async ${range(got.async.medians)}`,
    `checkpoint ${(ckptBytes / 2 ** 20).toFixed(1)} MiB per step (4 ranks); rank 0 blocked ${median(got.async.blocked).toFixed(2)} ms per async checkpoint (staging), write-to-commit ${median(got.async.write).toFixed(1)} ms; sync write ${median(got.sync.write).toFixed(1)} ms`,
    loadNote('at end'),
    `bench time ${((performance.now() - t0) / 1000).toFixed(0)} s`,
  );
  writeReport({
    bench: 'checkpoint',
    when: new Date().toISOString(),
    machine: machineInfo(process.env.OPENBLAS_CORETYPE ? `openblas ${process.env.OPENBLAS_CORETYPE}` : 'openblas'),
    config: {
      job: 'configs/debug_ep4.toml',
      interval: 1,
      steps: o.steps,
      rounds: o.rounds,
      checkpoint_bytes: ckptBytes,
    },
    results: [
      {
        name: 'async_step_ratio',
        value: ratio('async'),
        unit: 'x',
        target: 1.15,
        note: 'checkpoint step under async / step without checkpoint (median of per-round ratios)',
      },
      {
        name: 'sync_step_ratio',
        value: ratio('sync'),
        unit: 'x',
        note: 'checkpoint step under sync / step without checkpoint (median of per-round ratios)',
      },
      { name: 'step_ms_none', value: base, unit: 'ms' },
      { name: 'step_ms_sync', value: median(got.sync.steps), unit: 'ms' },
      { name: 'step_ms_async', value: median(got.async.steps), unit: 'ms' },
      { name: 'async_blocked_ms', value: median(got.async.blocked), unit: 'ms', note: 'rank 0 staging per checkpoint' },
      { name: 'checkpoint_bytes', value: ckptBytes, unit: 'B' },
    ],
    notes,
  });
}
