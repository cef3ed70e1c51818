// The command line, in-process through main(): unknown options never swallow values, "did you mean" for options
// and subcommands, --version, outputs that would overwrite inputs, resource refusals and their flag.

import { symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { main } from '../../../src/cli/main.ts';
import type { Case, Outcome, Sandbox } from '../harness.ts';

/** Runs the CLI in this process; the outcome is its exit code and everything it printed. */
export async function cli(argv: string[]): Promise<Outcome> {
  const out: string[] = [];
  const saved = {
    log: console.log,
    error: console.error,
    warn: console.warn,
    so: process.stdout.write,
    se: process.stderr.write,
  };
  const grab = (...a: unknown[]) => void out.push(a.map(String).join(' '));
  console.log = console.error = console.warn = grab;
  process.stdout.write = process.stderr.write = ((chunk: unknown) => (
    out.push(String(chunk)), true
  )) as typeof process.stdout.write;
  const before = process.exitCode;
  process.exitCode = 0;
  try {
    await main(argv);
  } finally {
    Object.assign(console, { log: saved.log, error: saved.error, warn: saved.warn });
    process.stdout.write = saved.so;
    process.stderr.write = saved.se;
  }
  const code = Number(process.exitCode ?? 0);
  process.exitCode = before;
  return { code, message: out.join('\n') };
}

const c = (argv: string[], exit: number, words: RegExp[], name = argv.join(' ')): Case => ({
  kind: 'cli',
  name,
  exit,
  words,
  run: () => cli(argv),
});

/** Files grad checks for existence before anything else. */
function gradInputs(sb: Sandbox) {
  const f = (n: string) => (writeFileSync(join(sb.run, n), 'x'), join(sb.run, n));
  return { config: f('g.toml'), ckpt: f('w.safetensors'), batch: f('b.safetensors') };
}

const DRY = ['train', '--dry-run'];

export const cliCases: Case[] = [
  c(['trian'], 1, [/unknown command 'trian'/, /Did you mean train\?/]),
  c(['plna'], 1, [/Did you mean plan\?/]),
  c(['--version'], 0, [/^0\.\d+\.\d+/]),
  c(['-V'], 0, [/^0\.\d+\.\d+/]),
  c(['--verison'], 1, [/unknown option '--verison'/, /Did you mean --version\?/]),
  c(['train', '--dryrun'], 1, [/unknown option --dryrun for `moe-actors train` \(did you mean --dry-run\?\)/]),
  c(['train', '--rank', '2'], 1, [/unknown option --rank .*did you mean --ranks\?/]),
  c(['train', '--start-ovr'], 1, [/did you mean --start-over\?/]),
  c(['plan', '--rnaks', '4'], 1, [/unknown option --rnaks for `moe-actors plan` \(did you mean --ranks\?\)/]),
  c(['train', '--config', '--training.steps', '3'], 1, [
    /--config needs a value, but the next argument is the option --training\.steps/,
  ]),
  c(['plan', '--ranks', '--comm.transport', 'inproc'], 1, [/--ranks needs a value/]),
  c(['train', '--metrics.enable_tensorboard', '--training.steps', '3', '--dry-run'], 1, [
    /unknown field \[metrics\] enable_tensorboard/,
  ]),
  c([...DRY, '--training.steps', '3.0'], 1, [/must be an integer, not a float/]),
  c([...DRY, '--comm.timeout_seconds', '1e308'], 1, [/≤ 2147483 s/]),
  c([...DRY, '--job.run_name', '../../etc'], 1, [/must be a name, not a path/]),
  c([...DRY, '--training.steps', '3'], 0, [/dry run: the config is valid; no ranks were started/]),
  c([...DRY, '--training.steps', '1', '--lr_scheduler.warmup_steps', '5'], 0, [
    /warning: \[lr_scheduler\] warmup_steps \(5\) exceeds \[training\] steps \(1\)/,
  ]),
  c([...DRY, '--training.seq_len', '1048576'], 1, [
    /the plan needs .* per rank .* × 4 ranks on this host = .*but the host has .* available/,
    /--skip-resource-check/,
  ]),
  c([...DRY, '--training.seq_len', '1048576', '--skip-resource-check'], 0, [/dry run: the config is valid/]),
  c(
    [
      ...DRY,
      '--transport',
      'inproc',
      '--ranks',
      '65',
      '--parallelism.data_parallel_shard_degree',
      '-1',
      '--parallelism.expert_parallel_degree',
      '1',
    ],
    1,
    [/65 inproc ranks on one host is more than the 64 allowed/, /--skip-resource-check/],
  ),
  c(
    [
      ...DRY,
      '--transport',
      'threads',
      '--ranks',
      '128',
      '--parallelism.data_parallel_shard_degree',
      '-1',
      '--parallelism.expert_parallel_degree',
      '1',
    ],
    1,
    [/128 threads ranks on one host is more than the 64 allowed/],
  ),
  c([...DRY, '--model.hf_assets_path', '/nonexistent/assets'], 1, [
    /hf_assets_path = "\/nonexistent\/assets" does not exist/,
  ]),
  c(['train', '--fault', 'delay:rank=1,ms=5', '--dry-run'], 1, [
    /fault injection \(--fault\) needs the inproc transport/,
  ]),
  c(['inspect', '--bogus', 'x'], 1, [/unknown option '--bogus'/]),
  c(['view'], 1, [/missing required argument 'run'/]),
  c(['machines', '--formt', 'dot'], 1, [/unknown option '--formt'/, /Did you mean --format\?/]),
  {
    kind: 'cli',
    name: 'grad --out equal to --checkpoint',
    exit: 1,
    words: [/--out .*w\.safetensors is the same file as --checkpoint/, /would overwrite the input/],
    run: (sb) => {
      const g = gradInputs(sb);
      return cli(['grad', '--config', g.config, '--checkpoint', g.ckpt, '--batch', g.batch, '--out', g.ckpt]);
    },
  },
  {
    kind: 'cli',
    name: 'grad --out equal to --batch through a symlink',
    exit: 1,
    words: [/is the same file as --batch/],
    run: (sb) => {
      const g = gradInputs(sb);
      symlinkSync(g.batch, join(sb.run, 'alias.safetensors'));
      return cli([
        'grad',
        '--config',
        g.config,
        '--checkpoint',
        g.ckpt,
        '--batch',
        g.batch,
        '--out',
        join(sb.run, 'alias.safetensors'),
      ]);
    },
  },
  {
    kind: 'cli',
    name: 'grad --out equal to --config spelled differently',
    exit: 1,
    words: [/is the same file as --config/],
    run: (sb) => {
      const g = gradInputs(sb);
      return cli([
        'grad',
        '--config',
        g.config,
        '--checkpoint',
        g.ckpt,
        '--batch',
        g.batch,
        '--out',
        join(sb.run, '.', '..', 'run', 'g.toml'),
      ]);
    },
  },
  {
    kind: 'cli',
    name: 'train reading its dataset from the run folder it writes',
    exit: 1,
    words: [/\[training\] dataset_path .*metrics\.jsonl is the file .* that this run writes/],
    run: (sb) => {
      writeFileSync(join(sb.run, 'metrics.jsonl'), 'hello\n');
      return cli([
        'train',
        '--transport',
        'inproc',
        '--job.dump_folder',
        sb.root,
        '--job.run_name',
        'run',
        '--training.dataset_path',
        join(sb.run, 'metrics.jsonl'),
      ]);
    },
  },
  {
    kind: 'cli',
    name: "train initialised from its own run's checkpoint folder",
    exit: 1,
    words: [/initial_load_path .* is inside the folder .*checkpoint that this run writes/, /drop initial_load_path/],
    run: (sb) =>
      cli([
        'train',
        '--transport',
        'inproc',
        '--job.dump_folder',
        sb.root,
        '--job.run_name',
        'run',
        '--checkpoint.initial_load_path',
        sb.step1,
      ]),
  },
];
