// Shared loading of the parity fixtures (test/fixtures/parity/<case>/, see its README).
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'smol-toml';
import { resolveModelConfig, type ResolvedModelConfig } from '../../src/models/config.ts';
import { getInt32, readSafetensors, type SafetensorsFile } from '../../src/models/safetensors.ts';
import type { Microbatch } from '../../src/models/model/model.ts';
import type { TrainConfig } from '../../src/models/model/train-step.ts';
import { parseAcMode, type AcMode } from '../../src/models/model/ac.ts';
import type { ParallelDegrees } from '../../src/comm/mesh-layout.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import { launch, type WorldOptions } from '../../src/comm/launch.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../../src/actors/programs/distributed-run.ts';

export const PARITY_DIR = join(import.meta.dirname, '..', 'fixtures', 'parity');

export function parityCases(): string[] {
  if (!existsSync(PARITY_DIR)) return [];
  return readdirSync(PARITY_DIR)
    .filter((d) => statSync(join(PARITY_DIR, d)).isDirectory())
    .sort();
}

export interface ParityCase {
  name: string;
  doc: Record<string, any>;
  config: ResolvedModelConfig;
  weights: SafetensorsFile;
  batch: Microbatch;
  expected: SafetensorsFile;
  train: SafetensorsFile | null;
}

export function loadCase(name: string): ParityCase {
  const dir = join(PARITY_DIR, name);
  const doc = parse(readFileSync(join(dir, 'config.toml'), 'utf8')) as Record<string, any>;
  const config = resolveModelConfig(doc.model, doc.training.seq_len);
  const b = readSafetensors(join(dir, 'batch.safetensors'));
  const shape = b.get('tokens')!.shape;
  const batch: Microbatch = {
    tokens: getInt32(b, 'tokens'),
    labels: getInt32(b, 'labels', shape),
    B: shape[0]!,
    S: shape[1]!,
  };
  const trainPath = join(dir, 'train.safetensors');
  return {
    name,
    doc,
    config,
    weights: readSafetensors(join(dir, 'weights.safetensors')),
    batch,
    expected: readSafetensors(join(dir, 'expected.safetensors')),
    train: existsSync(trainPath) ? readSafetensors(trainPath) : null,
  };
}

export function trainConfigOf(doc: Record<string, any>): TrainConfig {
  const o = doc.optimizer ?? {};
  const l = doc.lr_scheduler ?? {};
  const t = doc.training ?? {};
  return {
    adamw: {
      lr: o.lr ?? 8e-4,
      beta1: o.beta1 ?? 0.9,
      beta2: o.beta2 ?? 0.95,
      eps: o.eps ?? 1e-8,
      weight_decay: o.weight_decay ?? 0.1,
    },
    schedule: {
      totalSteps: t.steps ?? 10000,
      warmupSteps: l.warmup_steps ?? 200,
      decayRatio: l.decay_ratio ?? null,
      decayType: l.decay_type ?? 'linear',
      minLrFactor: l.min_lr_factor ?? 0,
    },
    maxNorm: t.max_norm ?? 1.0,
    ac: parseAcMode('none'),
  };
}

/** A parity fixture as the distributed parity tests run it: 3 optimizer steps against the single-rank model. */
export interface DistributedCase {
  name: string;
  model: ResolvedModelConfig;
  weights: string;
  adamw: RankJob['adamw'];
  schedule: RankJob['schedule'];
  maxNorm: number;
}

export function distributedCaseOf(name: string): DistributedCase {
  const dir = join(PARITY_DIR, name);
  const cfg = parse(readFileSync(join(dir, 'config.toml'), 'utf8')) as Record<string, any>;
  const o = cfg.optimizer ?? {};
  const l = cfg.lr_scheduler ?? {};
  return {
    name,
    model: resolveModelConfig(cfg.model, cfg.training.seq_len),
    weights: join(dir, 'weights.safetensors'),
    // eps 1e-6 as the fixtures use: with 1e-8 Adam turns fp32 reassociation noise of ~0 grads into O(lr) steps.
    adamw: {
      lr: o.lr ?? 4e-3,
      beta1: o.beta1 ?? 0.9,
      beta2: o.beta2 ?? 0.95,
      eps: 1e-6,
      weight_decay: o.weight_decay ?? 0.1,
    },
    schedule: {
      totalSteps: 3,
      warmupSteps: l.warmup_steps ?? 2,
      decayRatio: l.decay_ratio ?? 0.8,
      decayType: l.decay_type ?? 'linear',
      minLrFactor: l.min_lr_factor ?? 0.1,
    },
    maxNorm: cfg.training.max_norm ?? 0.5,
  };
}

/** A deterministic batch of B sequences over the model's vocabulary, some labels ignored. */
export function syntheticBatch(
  V: number,
  B: number,
  S: number,
  seed: number,
): { tokens: Int32Array; labels: Int32Array } {
  let x = seed >>> 0 || 1;
  const next = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8) % V;
  const tokens = new Int32Array(B * S).map(() => next());
  const labels = new Int32Array(B * S).map(() => next());
  labels[3] = -100;
  labels[B * S - 2] = -100;
  return { tokens, labels };
}

/** max|a − b| / max|b| (the numerics contract's gradient rule). */
export function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let d = 0;
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i]! - b[i]!));
    m = Math.max(m, Math.abs(b[i]!));
  }
  return m === 0 ? d : d / m;
}

const DISTRIBUTED_RUN = join(import.meta.dirname, '..', '..', 'src', 'actors', 'programs', 'distributed-run.ts');

/**
 * Runs src/actors/programs/distributed-run.ts on `ranks` inproc ranks (seed 7) and returns every rank's result in
 * rank order; a failed rank throws `<what>: <errors>` and the cross-rank diagnosis.
 */
export async function launchDistributedRun(
  args: DistributedRunArgs,
  ranks: number,
  what: string,
  world: Partial<WorldOptions> = {},
): Promise<DistributedRunResult[]> {
  const r = await launch<DistributedRunArgs, DistributedRunResult>(
    { transport: 'inproc', size: ranks, timeoutMs: 20_000, seed: 7, ...world },
    { module: DISTRIBUTED_RUN },
    args,
  );
  const failed = r.outcomes.filter((o) => !o.ok);
  if (failed.length)
    throw new Error(`${what}: ${failed.map((f) => (f as { error: string }).error).join('; ')}\n${r.diagnosis ?? ''}`);
  return r.outcomes.map((o) => (o as { value: DistributedRunResult }).value).sort((a, b) => a.rank - b.rank);
}

/** Cosine similarity of two gradients (the bf16 contract's per-tensor rule). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  return ab / Math.sqrt(aa * bb);
}

/** A mesh of the distributed parity matrix: how many ranks and their parallel degrees. */
export interface ParityLayout {
  ranks: number;
  degrees: Partial<ParallelDegrees>;
}

/** The layouts of the distributed parity matrix (test/actors/distributed-parity and scripts/numerics-hash). */
export const PARITY_LAYOUTS: Record<string, ParityLayout> = {
  fsdp2: { ranks: 2, degrees: { dp_shard: 2, ep: 1 } },
  'fsdp2-ep2': { ranks: 2, degrees: { dp_shard: 2, ep: 2 } },
  hsdp2x1: { ranks: 2, degrees: { dp_replicate: 2, dp_shard: 1, ep: 1 } },
  'fsdp4-ep2': { ranks: 4, degrees: { dp_shard: 4, ep: 2 } },
  'fsdp4-ep4': { ranks: 4, degrees: { dp_shard: 4, ep: 4 } },
  'hsdp2x2-ep2': { ranks: 4, degrees: { dp_replicate: 2, dp_shard: 2, ep: 2 } },
  fsdp4: { ranks: 4, degrees: { dp_shard: 4, ep: 1 } },
};

/** The AC modes the parity matrix covers. */
export const AC_NONE: AcMode = { mode: 'none' };
export const AC_SEL: AcMode = { mode: 'selective', every: 2 };
export const AC_FULL: AcMode = { mode: 'full' };
