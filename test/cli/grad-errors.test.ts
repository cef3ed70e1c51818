// `moe-actors grad` on bad input: exit code 1, one line naming the cause (and the fix), and no output file.
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensors, writeSafetensors, type SafeTensorInput } from '../../src/models/safetensors.ts';
import { expectFailure, fx, grad, scratch } from './grad-helpers.ts';

const s = scratch('moe-cli-grad-errors-');
afterAll(s.cleanup);

describe('moe-actors grad: bad input fails clearly and writes nothing', () => {
  const c = 'llama4_gqa_ropescale_top1';
  const files: Record<string, string> = {};
  beforeAll(() => {
    const w = readSafetensors(fx(c).weights);
    const b = readSafetensors(fx(c).batch);
    const save = (name: string, tensors: Map<string, SafeTensorInput>) => {
      files[name] = join(s.dir, `${name}.safetensors`);
      writeSafetensors(files[name]!, tensors);
    };
    const weights = () => new Map<string, SafeTensorInput>(w);
    const missing = weights();
    missing.delete('layers.1.moe.router.gate.weight');
    save('missing', missing);
    const extra = weights();
    extra.set('layers.2.attention.wq.weight', { shape: [4], data: new Float32Array(4) });
    save('extra', extra);
    const shaped = weights();
    const o = w.get('output.weight')!;
    shaped.set('output.weight', { shape: [o.shape[1]!, o.shape[0]!], data: o.data });
    save('shape', shaped);
    const tokens = b.get('tokens')!;
    const labels = b.get('labels')!;
    const big = BigInt64Array.from(tokens.data as BigInt64Array);
    big[1 * 16 + 3] = 64n; // vocab_size is 64
    save(
      'vocab',
      new Map<string, SafeTensorInput>([
        ['tokens', { shape: tokens.shape, data: big }],
        ['labels', labels],
      ]),
    );
    save('nolabels', new Map<string, SafeTensorInput>([['tokens', tokens]]));
    save(
      'mismatch',
      new Map<string, SafeTensorInput>([
        ['tokens', tokens],
        ['labels', { shape: [2, 15], data: (labels.data as BigInt64Array).slice(0, 30) }],
      ]),
    );
    files.config = join(s.dir, 'unknown-field.toml');
    writeFileSync(
      files.config,
      readFileSync(fx(c).config, 'utf8').replace('[training]\n', '[training]\nsequence_len = 16\n'),
    );
  });

  it('a checkpoint missing a tensor', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { weights: files.missing } }),
      'missing tensor(s) for this model: layers.1.moe.router.gate.weight',
    );
  });
  it('a checkpoint with an extra tensor', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { weights: files.extra } }),
      'tensor(s) this model does not have: layers.2.attention.wq.weight',
    );
  });
  it('a checkpoint with a wrong-shaped tensor', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { weights: files.shape } }),
      'tensor output.weight has shape (32, 64), the model expects (64, 32)',
    );
  });
  it('a token id outside the vocabulary (distributed: checked before any rank starts)', async () => {
    expectFailure(
      await grad(c, s.out(), ['--ranks', '2', '--transport', 'threads'], { files: { batch: files.vocab } }),
      'tokens[1, 3] = 64 (position 19) is outside the vocabulary [0, 64)',
    );
  });
  it('a batch without labels', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { batch: files.nolabels } }),
      /no tensor "labels" \(it has "tokens"\); a batch holds integer \(int64\) tensors "tokens" and "labels"/,
    );
  });
  it('labels shaped differently from tokens', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { batch: files.mismatch } }),
      '"tokens" has shape [2, 16] but "labels" has [2, 15]',
    );
  });
  it('a batch whose sequence length is not [training] seq_len', async () => {
    expectFailure(
      await grad(c, s.out(), ['--training.seq_len', '8']),
      'the batch has sequences of length 16 (shape [2, 16]) but [training] seq_len = 8; use a batch of length 8 or set --training.seq_len 16',
    );
  });
  it('an unknown config field', async () => {
    expectFailure(
      await grad(c, s.out(), [], { files: { config: files.config } }),
      'unknown field [training] sequence_len; fields of [training]: local_batch_size, global_batch_size, seq_len',
    );
  });
  it('an unknown flavor', async () => {
    expectFailure(
      await grad(c, s.out(), ['--model.flavor', 'debugmodl']),
      'model.flavor: unknown llama4 flavor "debugmodl"',
    );
  });
  it('a missing input file', async () => {
    const nope = join(s.dir, 'nope.safetensors');
    expectFailure(await grad(c, s.out(), [], { files: { weights: nope } }), `--checkpoint ${nope}: no such file`);
  });
  it('a dispatch the backend cannot run (the planner refuses before any rank starts)', async () => {
    expectFailure(
      await grad(c, s.out(), [
        '--ranks',
        '2',
        '--transport',
        'threads',
        '--parallelism.expert_parallel_degree',
        '2',
        '--comm.profile',
        'xccl-2025',
        '--comm.dispatch',
        'a2a',
      ]),
      '[comm] dispatch = "a2a" cannot run on backend threads/xccl-2025',
    );
  });
  it('--out naming a folder (refused before computing; nothing is written next to it)', async () => {
    const folder = join(s.dir, 'out-folder');
    mkdirSync(folder);
    const g = await grad(c, folder);
    expect(g.r.code).toBe(1);
    expect(g.r.stderr.trim()).toBe(
      `moe-actors: --out ${folder} is a folder; give the path of the .safetensors file to write`,
    );
    expect(readdirSync(folder)).toEqual([]);
  });
  it('--transport mpi outside mpiexec', async () => {
    expectFailure(
      await grad(c, s.out(), ['--transport', 'mpi']),
      '--transport mpi runs inside an MPI job: mpiexec.mpich -n N',
    );
  });
});
