// The settings a checkpoint must agree with to be resumed as the same run: the model, the optimizer and LR
// schedule, and the training/data settings. Parallelism is excluded on purpose (re-sharding onto another mesh is
// supported), and so are logging, tracing, checkpoint and communication settings, and the mixed-precision dtypes:
// a checkpoint holds the fp32 master weights and AdamW state whatever the compute dtype, so it moves between them.

import { createHash } from 'node:crypto';
import type { JobConfig } from '../job-config.ts';

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (v && typeof v === 'object')
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical((v as Record<string, unknown>)[k])]),
    );
  return v;
}

export function configHash(cfg: JobConfig): string {
  const { mixed_precision_param: _p, mixed_precision_reduce: _r, ...training } = cfg.training;
  const relevant = {
    model: cfg.model,
    optimizer: cfg.optimizer,
    lr_scheduler: cfg.lr_scheduler,
    training,
    seed: cfg.debug.seed,
  };
  return (
    'sha256:' +
    createHash('sha256')
      .update(JSON.stringify(canonical(relevant)))
      .digest('hex')
      .slice(0, 16)
  );
}
