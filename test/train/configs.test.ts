// Every job config in configs/ must load against the schema, resolve its [model], and describe a mesh that can
// exist: world = dp_replicate · dp_shard (tp = cp = pp = 1), experts divisible by EP, EP dividing dp_shard.
import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { createDataLoader } from '../../src/train/data/index.ts';

const configsDir = fileURLToPath(new URL('../../configs', import.meta.url));
const files = readdirSync(configsDir)
  .filter((f) => f.endsWith('.toml'))
  .sort();

// The model layer's resolver is another engineer's module; use it when present.
let resolveModelConfig:
  | ((
      model: unknown,
      seqLen: number,
    ) => { name: string; flavor: string; args: { vocab_size: number; moe_args: { num_experts: number } } })
  | undefined;
try {
  ({ resolveModelConfig } = await import('../../src/models/config.ts'));
} catch {
  resolveModelConfig = undefined;
}

describe('configs/', () => {
  it('holds the default job and the Aurora report’s configs', () => {
    expect(files).toEqual(
      expect.arrayContaining([
        'debug_ep4.toml',
        'llama4_ep12_fallback.toml',
        'llama4_dense12.toml',
        'deepseek_v3_1b_noep.toml',
        'deepseek_v3_1b_ep12.toml',
        'deepseek_v3_1b_hsdp_ep6.toml',
        'llama4_medium_ep12.toml',
        'llama4_medium_noep.toml',
        'llama4_medium_dense.toml',
        'llama4_large_ep12.toml',
        'llama4_large_noep.toml',
        'llama4_large_dense.toml',
      ]),
    );
    const readme = readFileSync(join(configsDir, 'README.md'), 'utf8');
    for (const f of files) expect(readme, `configs/README.md does not mention ${f}`).toContain(`\`${f}\``);
  });

  it.each(files)('%s loads, resolves its model and has a consistent mesh', (f) => {
    const cfg = loadJobConfig(join(configsDir, f));
    const p = cfg.parallelism;
    expect(
      p.data_parallel_shard_degree,
      'give dp_shard explicitly so launchers can compute the world size',
    ).toBeGreaterThan(0);
    const world =
      p.data_parallel_replicate_degree *
      p.data_parallel_shard_degree *
      p.tensor_parallel_degree *
      p.context_parallel_degree *
      p.pipeline_parallel_degree;
    expect(cfg.comm.ranks).toBe(world);
    expect(p.data_parallel_shard_degree % p.expert_parallel_degree).toBe(0);
    expect(cfg.training.seq_len % 2).toBe(0);
    if (resolveModelConfig) {
      const m = resolveModelConfig(cfg.model, cfg.training.seq_len);
      expect(m.flavor).toBe(cfg.model.flavor);
      expect(m.args.moe_args.num_experts % p.expert_parallel_degree).toBe(0);
      // The text data must feed every data-parallel rank (enough documents, token ids within the vocabulary).
      const dp = p.data_parallel_replicate_degree * p.data_parallel_shard_degree;
      const loader = createDataLoader(cfg, { dpRank: dp - 1, dpDegree: dp, vocabSize: m.args.vocab_size });
      expect(loader.next().tokens.length).toBe(cfg.training.local_batch_size * cfg.training.seq_len);
    }
  });

  it('the default job: Llama4 debug model, EP 4 + FSDP 4 on 4 worker-thread ranks, real text, ~20 steps', () => {
    const c = loadJobConfig(join(configsDir, 'debug_ep4.toml'));
    expect([c.model.name, c.model.flavor, c.comm.transport, c.comm.ranks]).toEqual([
      'llama4',
      'debugmodel',
      'threads',
      4,
    ]);
    expect([c.parallelism.expert_parallel_degree, c.parallelism.data_parallel_shard_degree]).toEqual([4, 4]);
    expect(c.training.dataset).toBe('text');
    expect(c.training.steps).toBe(20);
  });

  it('the Aurora configs run 12 MPI ranks with the report’s backend limits', () => {
    for (const f of files.filter((x) => x !== 'debug_ep4.toml')) {
      const c = loadJobConfig(join(configsDir, f));
      expect([f, c.comm.transport, c.comm.ranks, c.comm.ranks_per_node, c.comm.profile]).toEqual([
        f,
        'mpi',
        12,
        12,
        'xccl-2025',
      ]);
      if (c.parallelism.expert_parallel_degree > 1) expect(c.comm.dispatch).toBe('allgather-padded');
    }
    const ds = loadJobConfig(join(configsDir, 'deepseek_v3_1b_hsdp_ep6.toml'));
    expect([
      ds.parallelism.data_parallel_replicate_degree,
      ds.parallelism.data_parallel_shard_degree,
      ds.parallelism.expert_parallel_degree,
    ]).toEqual([2, 6, 6]);
    expect([ds.training.local_batch_size, ds.training.seq_len, ds.training.steps]).toEqual([4, 512, 10]);
  });
});
