// Job configs and config overrides: every field validated as its type and range, names that are names, text that
// is UTF-8, warnings where torchtitan warns. In-process: loadJobConfig on a TOML file in the run folder.

import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { configPathProblems, configWarnings, loadJobConfig } from '../../../src/train/job-config.ts';
import { attempt, type Case, type Sandbox } from '../harness.ts';

/** Loads `toml` (a [section] body per key) as a config file in the run folder, with overrides. */
function load(sb: Sandbox, toml: string | Uint8Array, overrides: string[] = []) {
  const p = join(sb.run, 'job.toml');
  writeFileSync(p, toml);
  return attempt(() => {
    const cfg = loadJobConfig(p, overrides);
    const problems = configPathProblems(cfg);
    if (problems.length) throw new Error(problems.join('\n'));
    return configWarnings(cfg).join('\n');
  });
}

const toml = (text: string, words: RegExp[], name = text.replace(/\n/g, ' ')): Case => ({
  kind: 'config',
  name,
  exit: 1,
  words,
  run: (sb) => load(sb, text),
});
const ok = (text: string, words: RegExp[], name = text.replace(/\n/g, ' ')): Case => ({
  kind: 'config',
  name: `accepted: ${name}`,
  exit: 0,
  words,
  run: (sb) => load(sb, text),
});
const override = (args: string[], words: RegExp[], exit = 1): Case => ({
  kind: 'config',
  name: `override ${args.join(' ')}`,
  exit,
  words,
  run: (sb) => load(sb, '', args),
});

export const configCases: Case[] = [
  // integers are integers
  toml('[training]\nsteps = 3.0', [/\[training\] steps = 3: must be an integer, not a float \(write 3/]),
  toml('[training]\nsteps = 1e308', [/steps = 1e\+308: must be an integer, not a float/]),
  toml('[training]\nsteps = 9007199254740993', [/steps = 9007199254740993: is out of range/]),
  toml('[training]\nsteps = "3"', [/steps = "3": must be an integer/]),
  toml('[training]\nsteps = true', [/must be an integer/]),
  toml('[training]\nsteps = 0', [/steps = 0: must be ≥ 1/]),
  toml('[training]\nsteps = inf', [/steps = Infinity: must be an integer, not a float/]),
  toml('[training]\nlocal_batch_size = -1', [/local_batch_size = -1: must be ≥ 1/]),
  toml('[training]\nseq_len = 3', [/seq_len = 3: must be even/]),
  toml('[lr_scheduler]\nwarmup_steps = 2.5', [/warmup_steps = 2\.5: must be an integer, not a float/]),
  toml('[comm]\nseed = 1.5', [/\[comm\] seed = 1\.5: must be an integer/]),
  toml('[activation_checkpoint]\nselective_ac_option = 2.0', [
    /selective_ac_option = 2: must be an integer, not a float/,
  ]),
  toml('[checkpoint]\ninterval = 1e3', [/interval = 1000: must be an integer, not a float/]),
  toml('[parallelism]\nexpert_parallel_degree = 0x10\ndata_parallel_shard_degree = 1.0', [
    /data_parallel_shard_degree = 1: must be an integer/,
  ]),
  // timeouts a timer can hold
  toml('[comm]\ntimeout_seconds = 1e308', [/timeout_seconds = 1e\+308: must be > 0 and ≤ 2147483 s/, /2\^31−1 ms/]),
  toml('[comm]\ntimeout_seconds = 3e6', [/timeout_seconds = 3000000: must be > 0 and ≤ 2147483 s/]),
  toml('[comm]\ninit_timeout_seconds = 2147484', [/init_timeout_seconds = 2147484: must be > 0 and ≤ 2147483/]),
  toml('[comm]\ntimeout_seconds = 0', [/timeout_seconds = 0: must be > 0/]),
  toml('[comm]\ntimeout_seconds = -5', [/must be > 0/]),
  toml('[comm]\ntimeout_seconds = nan', [/timeout_seconds = NaN: must be a number/]),
  ok('[comm]\ntimeout_seconds = 2147483\ninit_timeout_seconds = 0.5', [/^$/]),
  // other ranges
  toml('[optimizer]\nlr = 0', [/lr = 0: must be > 0/]),
  toml('[optimizer]\nlr = "fast"', [/lr = "fast": must be a number/]),
  toml('[optimizer]\nbeta1 = 1.0', [/beta1 = 1: must be in \[0, 1\)/]),
  toml('[lr_scheduler]\ndecay_ratio = 2', [/decay_ratio = 2: must be between 0 and 1/]),
  toml('[comm]\ndispatch = "a2a-fast"', [/dispatch = "a2a-fast": must be one of "auto", "a2a"/]),
  toml('[comm]\nranks = 0', [/ranks = 0: must be ≥ 1/]),
  // names and paths
  toml('[job]\nrun_name = "../escape"', [/run_name = "\.\.\/escape": must be a name, not a path/]),
  toml('[job]\nrun_name = "/tmp/abs"', [/must be a name, not a path/]),
  toml('[job]\nrun_name = ".."', [/must be a name, not "\.\."/]),
  toml('[job]\nrun_name = "a\\\\b"', [/must be a name, not a path/]),
  toml(`[job]\nrun_name = "${'x'.repeat(300)}"`, [/at most 255 bytes/], 'a 300-character run_name'),
  ok('[job]\nrun_name = "my-run_2.b"', [/^$/]),
  toml('[checkpoint]\nfolder = "/tmp/ckpt"', [
    /\[checkpoint\] folder = "\/tmp\/ckpt": must be a relative path inside the run folder/,
  ]),
  toml('[checkpoint]\nfolder = "../../ckpt"', [/must stay inside the run folder/]),
  toml('[model]\nhf_assets_path = "/nonexistent/tokenizer"', [
    /hf_assets_path = "\/nonexistent\/tokenizer" does not exist/,
  ]),
  // names of sections and fields
  toml('[trainig]\nsteps = 3', [/unknown section \[trainig\] \(did you mean \[training\]\?\)/]),
  toml('[training]\nstep = 3', [/unknown field \[training\] step \(did you mean steps\?\)/]),
  toml('training = 3', [/"training" must be a table/]),
  // text
  {
    kind: 'config',
    name: 'a config that is not UTF-8 (Latin-1)',
    exit: 1,
    words: [/is not valid UTF-8 text/, /iconv/],
    run: (sb) => load(sb, Uint8Array.from([...Buffer.from('[job]\ndescription = "caf'), 0xe9, ...Buffer.from('"\n')])),
  },
  {
    kind: 'config',
    name: 'a binary file as config',
    exit: 1,
    words: [/is binary \(a NUL byte at offset 2\)/],
    run: (sb) => load(sb, Uint8Array.from([0x5b, 0x61, 0, 1, 2, 0x5d])),
  },
  {
    kind: 'config',
    name: 'a 2 MiB config',
    exit: 1,
    words: [/too large for a TOML job config/],
    run: (sb) => load(sb, '#'.repeat(2 << 20)),
  },
  toml('[training\nsteps = 3', [/invalid TOML/]),
  {
    kind: 'config',
    name: 'a folder as config',
    exit: 1,
    words: [/it is a folder; give a \.toml file/],
    run: (sb) => (mkdirSync(join(sb.run, 'cfgdir')), attempt(() => loadJobConfig(join(sb.run, 'cfgdir')))),
  },
  {
    kind: 'config',
    name: 'a config that does not exist',
    exit: 1,
    words: [/cannot read config .*: no such file/],
    run: (sb) => attempt(() => loadJobConfig(join(sb.run, 'nope.toml'))),
  },
  // warnings where torchtitan warns
  ok(
    '[training]\nsteps = 5\n[lr_scheduler]\nwarmup_steps = 200',
    [/warmup_steps \(200\) exceeds \[training\] steps \(5\); warmup is shortened to 5 steps/],
    'warmup_steps beyond steps warns',
  ),
  ok('[training]\nsteps = 5\n[lr_scheduler]\nwarmup_steps = 5', [/^$/], 'warmup_steps = steps does not warn'),
  ok(
    '[model.args]\ndim = 64\n[model.args.moe_args]\nnum_experts = 4',
    [/^$/],
    'integer model args still reach the models layer as numbers',
  ),
  // command-line overrides
  override(['--training.steps', '3.0'], [/steps = 3: must be an integer, not a float/]),
  override(['--training.steps', '1e3'], [/must be an integer, not a float/]),
  override(['--training.steps', 'abc'], [/steps = "abc": must be an integer/]),
  override(['--training.steps', '99999999999999999999'], [/is out of range/]),
  override(['--comm.timeout_seconds', '3e6'], [/≤ 2147483 s/]),
  override(['--metrics.enable_tensorboard', '--training.steps', '3'], [/unknown field \[metrics\] enable_tensorboard/]),
  override(['--training.steps'], [/override --training.steps needs a value, e.g. --training.steps 10000/]),
  override(['--training.steps', '--debug.seed', '1'], [/override --training.steps needs a value/]),
  override(['--trainingsteps', '3'], [/must name a section and a field/]),
  override(['steps', '3'], [/unexpected argument "steps"/]),
  override(['--job.run_name', 'a/b'], [/must be a name, not a path/]),
  override(['--training.steps=7', '--debug.seed=-3'], [/warmup_steps \(200\) exceeds \[training\] steps \(7\)/], 0),
];
