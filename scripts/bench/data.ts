// `npm run bench:data [-- --steps N --reps R]`: what the BPE tokenizer costs.
//   tokenizer_tps_pool_thread  tokens/s of the bundled BPE (data/tokenizer) encoding the bundled sample's documents
//                              in one side-pool thread (the 'encode' task a rank's prefetch sends), R passes
//   tokenizer_tps_inline       the same on this thread (what a step would pay without the pool)
//   data_loading_pct_bpe       the default job (configs/debug_ep4.toml) with [model] tokenizer_path = data/tokenizer:
//                              torchtitan's time_metrics/data_loading(%), median over ranks and the steps after the
//                              first (target ≤ 1 %), and its max beside it
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runTraining } from '../../src/train/trainer.ts';
import { HfTokenizer, splitParagraphs } from '../../src/train/data/index.ts';
import { closeSidePool, configureSidePool, processPool } from '../../src/train/pool/pool.ts';
import { ROOT, loadNote, machineInfo, median, writeReport } from './common.ts';

export async function run(argv: string[]): Promise<void> {
  let steps = 10;
  let reps = 5;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--steps') steps = Math.max(3, Number(argv[++i]));
    else if (argv[i] === '--reps') reps = Math.max(1, Number(argv[++i]));
    else throw new Error(`bench:data: unknown argument ${argv[i]} (use --steps N, --reps R)`);
  }
  const notes = [loadNote('at start')];
  const tokDir = join(ROOT, 'data', 'tokenizer');
  const texts = splitParagraphs(readFileSync(join(ROOT, 'data', 'sample.txt'), 'utf8'));
  const tok = HfTokenizer.load(tokDir);
  const file = join(tokDir, 'tokenizer.json');

  configureSidePool(1);
  const pool = processPool();
  await pool.run({ kind: 'encode', tokenizerFile: file, texts: texts.slice(0, 4) });
  const poolTps: number[] = [];
  const inlineTps: number[] = [];
  for (let r = 0; r < reps; r++) {
    let t0 = performance.now();
    const docs = await pool.run({ kind: 'encode', tokenizerFile: file, texts });
    const n = docs.reduce((a, d) => a + d.length, 0);
    poolTps.push(n / ((performance.now() - t0) / 1000));
    t0 = performance.now();
    let m = 0;
    for (const t of texts) m += tok.encode(t, { bos: true, eos: true }).length;
    inlineTps.push(m / ((performance.now() - t0) / 1000));
  }
  await closeSidePool();

  const dump = join(ROOT, 'outputs', 'bench', 'data-runs');
  rmSync(join(dump, 'bpe'), { recursive: true, force: true });
  const out = await runTraining({ quiet: true }, [
    '--model.tokenizer_path',
    tokDir,
    '--training.steps',
    String(steps),
    '--metrics.log_freq',
    '1',
    '--trace.enable',
    'false',
    '--job.dump_folder',
    dump,
    '--job.run_name',
    'bpe',
  ]);
  const recs = readFileSync(join(out!.runDir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Record<string, number>);
  const pct = recs.filter((r) => r.step > 1).map((r) => r['time_metrics/data_loading(%)']!);
  notes.push(
    `tokenizer: ${texts.length} documents per pass, ${reps} passes; pool ${Math.round(median(poolTps))} tokens/s, inline ${Math.round(median(inlineTps))} tokens/s`,
    `data loading % (steps 2..${steps}, all ranks): median ${median(pct).toFixed(3)}, max ${Math.max(...pct).toFixed(3)}`,
    loadNote('at end'),
  );
  writeReport({
    bench: 'data',
    when: new Date().toISOString(),
    machine: machineInfo(process.env.OPENBLAS_CORETYPE ? `openblas ${process.env.OPENBLAS_CORETYPE}` : 'openblas'),
    config: { tokenizer: 'data/tokenizer (byte-level BPE, 1024 ids)', job: 'configs/debug_ep4.toml', steps },
    results: [
      {
        name: 'tokenizer_tps_pool_thread',
        value: median(poolTps),
        unit: 'tokens/s',
        note: 'one side-pool thread, bundled sample',
      },
      { name: 'tokenizer_tps_inline', value: median(inlineTps), unit: 'tokens/s', note: 'same, on the calling thread' },
      {
        name: 'data_loading_pct_bpe',
        value: median(pct),
        unit: '%',
        target: 1,
        note: 'default job, BPE tokenizer, median over ranks and steps ≥ 2',
      },
      { name: 'data_loading_pct_bpe_max', value: Math.max(...pct), unit: '%' },
    ],
    notes,
  });
}
