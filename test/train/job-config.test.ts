import { describe, expect, it } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { acModeOf, buildConfig, loadJobConfig, modelConfigOf, parseOverrides } from '../../src/train/job-config.ts';

const dir = mkdtempSync(join(tmpdir(), 'moe-cfg-'));
function file(text: string): string {
  const p = join(dir, `c${Math.random().toString(36).slice(2)}.toml`);
  writeFileSync(p, text);
  return p;
}

describe('job config', () => {
  it('takes torchtitan defaults, file values and command-line overrides, in that order', () => {
    const p = file('[training]\nsteps = 5\nseq_len = 64\n[optimizer]\nlr = 4e-3\n');
    const c = loadJobConfig(p, [
      '--training.steps',
      '7',
      '--comm.profile=xccl-2025',
      '--metrics.disable_color_printing',
    ]);
    expect(c.training.steps).toBe(7);
    expect(c.training.seq_len).toBe(64);
    expect(c.optimizer.lr).toBe(4e-3);
    expect(c.optimizer.beta2).toBe(0.95);
    expect(c.lr_scheduler.warmup_steps).toBe(200);
    expect(c.comm.profile).toBe('xccl-2025');
    expect(c.metrics.disable_color_printing).toBe(true);
    expect(acModeOf(c)).toEqual({ mode: 'selective', every: 2 });
  });

  it('debug.moe_force_load_balance reaches the model’s moe_args (torchtitan’s update_from_config)', () => {
    const p = file('[model]\nname = "llama4"\nflavor = "debugmodel"\n[training]\nseq_len = 64\n');
    expect(modelConfigOf(loadJobConfig(p)).args.moe_args._debug_force_load_balance).toBe(false);
    const forced = modelConfigOf(loadJobConfig(p, ['--debug.moe_force_load_balance']));
    expect(forced.args.moe_args._debug_force_load_balance).toBe(true);
    expect(forced.args.max_seq_len).toBe(64);
  });

  it('overrides [model.args] and its sub-tables from the command line; the models layer checks names and types', () => {
    const p = file(
      '[model]\nname = "llama4"\nflavor = "debugmodel"\n[model.args.moe_args]\ntop_k = 1\n[training]\nseq_len = 64\n',
    );
    expect(
      parseOverrides(['--model.args.dim', '48', '--model.args.moe_args.route_norm', '--model.args.n_kv_heads=null']),
    ).toEqual({
      model: { args: { dim: 48, moe_args: { route_norm: true }, n_kv_heads: null } },
    });
    const m = modelConfigOf(
      loadJobConfig(p, [
        '--model.args.dim',
        '512',
        '--model.args.moe_args.num_experts',
        '4',
        '--model.args.moe_args.score_func',
        'softmax',
      ]),
    );
    expect(m.args.dim).toBe(512);
    expect(m.args.moe_args).toMatchObject({ num_experts: 4, score_func: 'softmax', top_k: 1 });
    expect(() => modelConfigOf(loadJobConfig(p, ['--model.args.dimm', '48']))).toThrow(
      /model\.args\.dimm: unknown field; valid fields are: dim, /,
    );
    expect(() => modelConfigOf(loadJobConfig(p, ['--model.args.dim', 'wide']))).toThrow(
      /model\.args\.dim: expected an integer, got "wide"/,
    );
    expect(() => parseOverrides(['--model.args..dim', '1'])).toThrow(/has an empty field name/);
  });

  const bad: [string, string, RegExp][] = [
    ['unknown section', '[trainng]\nsteps = 1\n', /unknown section \[trainng\] \(did you mean \[training\]\?\)/],
    ['unknown field', '[training]\nstep = 1\n', /unknown field \[training\] step \(did you mean steps\?\)/],
    ['wrong type', '[training]\nsteps = "ten"\n', /\[training\] steps = "ten": must be an integer/],
    ['odd seq_len', '[training]\nseq_len = 513\n', /\[training\] seq_len = 513: must be even/],
    ['zero steps', '[training]\nsteps = 0\n', /\[training\] steps = 0: must be ≥ 1/],
    ['negative lr', '[optimizer]\nlr = -1.0\n', /\[optimizer\] lr = -1: must be > 0/],
    [
      'bad decay type',
      '[lr_scheduler]\ndecay_type = "exp"\n',
      /decay_type = "exp": must be one of "linear", "sqrt", "cosine"/,
    ],
    ['beta out of range', '[optimizer]\nbeta2 = 1.0\n', /beta2 = 1: must be in \[0, 1\)/],
    [
      'unknown transport',
      '[comm]\ntransport = "nccl"\n',
      /\[comm\] transport = "nccl": must be one of "inproc", "threads", "mpi"/,
    ],
    ['unknown profile', '[comm]\nprofile = "xccl"\n', /\[comm\] profile = "xccl": must be one of/],
    ['bad dispatch', '[comm]\ndispatch = "alltoall"\n', /\[comm\] dispatch = "alltoall": must be one of "auto", "a2a"/],
    [
      'fp16 params',
      '[training]\nmixed_precision_param = "float16"\n',
      /mixed_precision_param = "float16": must be one of "float32", "bfloat16"/,
    ],
    [
      'bad AC option',
      '[activation_checkpoint]\nselective_ac_option = "half"\n',
      /selective_ac_option = "half": must be a positive integer k/,
    ],
    [
      'AC every 0th block',
      '[activation_checkpoint]\nselective_ac_option = "0"\n',
      /selective_ac_option = "0": must be a positive integer k \(every k-th block; torchtitan rejects k ≤ 0\)/,
    ],
    [
      'bad reshard policy',
      '[parallelism]\nfsdp_reshard_after_forward = "sometimes"\n',
      /fsdp_reshard_after_forward = "sometimes"/,
    ],
    [
      'dp_shard 0',
      '[parallelism]\ndata_parallel_shard_degree = 0\n',
      /data_parallel_shard_degree = 0: must be ≥ 1 or -1/,
    ],
    ['section not a table', 'training = 3\n', /"training" must be a table/],
    ['invalid TOML', '[training\nsteps = 1\n', /invalid TOML/],
  ];
  for (const [name, text, re] of bad) {
    it(`rejects ${name} with a message naming the field and the rule`, () => {
      expect(() => loadJobConfig(file(text))).toThrow(re);
    });
  }

  it('names a missing file', () => {
    expect(() => loadJobConfig(join(dir, 'nope.toml'))).toThrow(/cannot read config .*nope\.toml: no such file/);
  });

  it('checks override values like file values', () => {
    expect(() => loadJobConfig(null, ['--training.steps', 'many'])).toThrow(
      /\[training\] steps = "many": must be an integer/,
    );
    expect(() => parseOverrides(['--steps', '3'])).toThrow(/must name a section and a field/);
    expect(() => loadJobConfig(null, ['--training.stepz', '3'])).toThrow(/unknown field \[training\] stepz/);
    expect(buildConfig({}, 'x').comm.transport).toBe('threads');
  });
});
