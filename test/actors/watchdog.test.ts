// A rank stuck outside any collective (a dropped protocol event, a stage that never settles) is found by the
// RankHost step watchdog, which names the states the machines are in; the other ranks fail by their collective
// timeouts, so the launch ends instead of hanging.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'smol-toml';
import { launch } from '../../src/comm/launch.ts';
import { resolveModelConfig } from '../../src/models/config.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';

const FIX = fileURLToPath(new URL('../fixtures/parity/llama4_gqa_ropescale_top1/', import.meta.url));

describe('RankHost step watchdog', () => {
  it('fails a step that makes no progress outside collectives, naming the machine states', async () => {
    const cfg = parse(readFileSync(`${FIX}config.toml`, 'utf8')) as Record<string, any>;
    const job: RankJob = {
      model: resolveModelConfig(cfg.model, cfg.training.seq_len),
      degrees: { dp_shard: 2, ep: 2 },
      dispatch: 'a2a',
      gradReduce: 'sum',
      divideFactor: 1,
      reshard: 'default',
      ac: { mode: 'none' },
      adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 },
      schedule: { totalSteps: 2, warmupSteps: 1, decayRatio: null, decayType: 'linear', minLrFactor: 0 },
      maxNorm: 1,
      seed: 1,
      watchdogMs: 300,
    };
    const S = cfg.training.seq_len as number;
    const B = 2;
    const tokens = new Int32Array(B * S).map((_, i) => (i * 7) % 64);
    const labels = new Int32Array(B * S).map((_, i) => (i * 5 + 1) % 64);
    const t0 = performance.now();
    const r = await launch<unknown, string>(
      { transport: 'inproc', size: 2, timeoutMs: 3000 },
      { module: fileURLToPath(new URL('./programs/stalled-step.ts', import.meta.url)) },
      { job, tokens, labels, B: 1, S },
    );
    const ms = performance.now() - t0;
    const r0 = r.outcomes.find((o) => o.rank === 0)!;
    expect(r0.ok).toBe(false);
    const err = (r0 as { error: string }).error;
    expect(err).toMatch(/rank 0 made no progress for \d+ ms in step 1 and is not in a collective/);
    expect(err).toMatch(/train-step in \{"microbatch":"forward"\} \(layer 0, microbatch 0\)/);
    expect(err).toMatch(/A protocol event was dropped or a stage never settled/);
    // Rank 1 waits in a collective rank 0 never joins, and fails by its timeout (or the world's first failure).
    expect(r.outcomes.find((o) => o.rank === 1)!.ok).toBe(false);
    expect(ms).toBeLessThan(10_000);
  });
});
