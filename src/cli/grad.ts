// `moe-actors grad`: the parity tool. One forward and backward of given weights on a given batch, written as
// `loss` + `grad.<torchtitan name>` so a PyTorch reference (scripts/reference/) can be compared tensor by tensor.
//
// Single rank: the plain Model. Distributed (--ranks N > 1, or --transport mpi): the rank program
// src/actors/programs/distributed-run.ts through launch(), with the planner's dispatch / grad-reduce decisions and
// the batch split over data-parallel ranks as the trainer splits it; rank 0 gathers the full gradients and writes.
//
// Every input is checked in the launching process before any rank starts (and, under mpi, identically in every
// process), so bad input is one clear error and never a half-run job or a half-written file: the output is written
// once, atomically, at the very end.

import { availableParallelism } from 'node:os';
import { existsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pc from 'picocolors';
import { requireCcl } from '../comm/ccl/native.ts';
import { isMpiJobTransport, launch, launchFailure, TRANSPORTS, type TransportName } from '../comm/launch.ts';
import type { ResolvedModelConfig } from '../models/config.ts';
import { countValid, Model, type Microbatch } from '../models/model/model.ts';
import { loadWeights } from '../models/model/weights.ts';
import {
  readSafetensors,
  writeSafetensors,
  type SafeTensorInput,
  type SafetensorsFile,
} from '../models/safetensors.ts';
import type { RankJob } from '../actors/rank-host.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../actors/programs/distributed-run.ts';
import { acModeOf, loadJobConfig, modelConfigOf, type JobConfig } from '../train/job-config.ts';
import { planJob } from '../train/trainer.ts';
import { microbatchesOf, rankJobOf } from '../train/train-rank.ts';
import { ensureDir } from '../train/ensure-dir.ts';
import { CliError, mpiJob, parseRanks, requireDistinctOutput, requireFile } from './common.ts';

const RANK_PROGRAM = fileURLToPath(new URL('../actors/programs/distributed-run.ts', import.meta.url));
const IGNORE_INDEX = -100;

export interface GradOptions {
  config: string;
  checkpoint: string;
  batch: string;
  out: string;
  ranks?: string;
  transport?: string;
}

export interface GradBatch {
  tokens: Int32Array;
  labels: Int32Array;
  B: number;
  S: number;
}

const fmtShape = (s: readonly number[]) => `[${s.join(', ')}]`;

/**
 * Reads B.safetensors: integer `tokens` and `labels` of the same shape (B, S), S = [training] seq_len, token ids in
 * [0, vocab), labels in [0, vocab) or −100. Values are range-checked before narrowing to int32, so an id like 2^40
 * is reported as itself.
 */
export function readBatch(path: string, vocab: number, seqLen: number): GradBatch {
  const f = readSafetensors(path);
  const layout = 'a batch holds integer (int64) tensors "tokens" and "labels" of shape (B, S)';
  const get = (name: 'tokens' | 'labels') => {
    const t = f.get(name);
    if (!t)
      throw new CliError(
        `${path}: no tensor "${name}" (it has ${[...f.keys()].map((k) => `"${k}"`).join(', ') || 'no tensors'}); ${layout}`,
      );
    if (t.dtype !== 'I64' && t.dtype !== 'I32')
      throw new CliError(`${path}: tensor "${name}" is ${t.dtype}; ${layout}`);
    if (t.shape.length !== 2) throw new CliError(`${path}: tensor "${name}" has shape ${fmtShape(t.shape)}; ${layout}`);
    return t;
  };
  const t = get('tokens');
  const l = get('labels');
  if (t.shape[0] !== l.shape[0] || t.shape[1] !== l.shape[1]) {
    throw new CliError(
      `${path}: "tokens" has shape ${fmtShape(t.shape)} but "labels" has ${fmtShape(l.shape)}; both must be (B, S)`,
    );
  }
  const [B, S] = t.shape as [number, number];
  if (B < 1 || S < 1) throw new CliError(`${path}: empty batch (shape ${fmtShape(t.shape)})`);
  if (S !== seqLen) {
    throw new CliError(
      `${path}: the batch has sequences of length ${S} (shape ${fmtShape(t.shape)}) but [training] seq_len = ${seqLen}; use a batch of length ${seqLen} or set --training.seq_len ${S}`,
    );
  }
  const narrow = (
    name: string,
    data: ArrayLike<number | bigint>,
    ok: (v: number) => boolean,
    rule: string,
  ): Int32Array => {
    const out = new Int32Array(B * S);
    for (let i = 0; i < out.length; i++) {
      const raw = data[i]!;
      const v = Number(raw);
      if (!ok(v)) {
        throw new CliError(`${path}: ${name}[${Math.floor(i / S)}, ${i % S}] = ${raw} (position ${i}) ${rule}`);
      }
      out[i] = v;
    }
    return out;
  };
  const inVocab = (v: number) => Number.isInteger(v) && v >= 0 && v < vocab;
  const tokens = narrow(
    'tokens',
    t.data as ArrayLike<number | bigint>,
    inVocab,
    `is outside the vocabulary [0, ${vocab}) of the model (vocab_size = ${vocab}); check the tokenizer or [model.args] vocab_size`,
  );
  const labels = narrow(
    'labels',
    l.data as ArrayLike<number | bigint>,
    (v) => v === IGNORE_INDEX || inVocab(v),
    `is outside the vocabulary [0, ${vocab}) and is not the ignore index ${IGNORE_INDEX}`,
  );
  if (countValid(labels) === 0)
    throw new CliError(`${path}: every label is ${IGNORE_INDEX} (ignored): the loss is undefined`);
  return { tokens, labels, B, S };
}

/** The batch cut into `n` microbatches of contiguous rows (what gradient accumulation feeds one rank). */
function microbatches(b: GradBatch, n: number): Microbatch[] {
  const per = b.B / n;
  return Array.from({ length: n }, (_, m) => ({
    B: per,
    S: b.S,
    tokens: b.tokens.slice(m * per * b.S, (m + 1) * per * b.S),
    labels: b.labels.slice(m * per * b.S, (m + 1) * per * b.S),
  }));
}

/** Builds a full model and loads the checkpoint into it: the same strict check (names, dtypes, shapes) ranks apply. */
function loadModel(model: ResolvedModelConfig, weights: SafetensorsFile): Model {
  const m = Model.build(model);
  loadWeights(m, weights);
  return m;
}

interface Where {
  distributed: boolean;
  transport: TransportName;
  size: number;
  /** This process writes the output (always, except on MPI ranks other than 0). */
  writer: boolean;
}

function placement(opts: GradOptions, cfg: JobConfig): Where {
  const ranks = parseRanks(opts.ranks);
  // A config that says mpi, run under mpiexec, means mpi too; --transport mpi outside mpiexec is an error.
  const asked = opts.transport ?? (mpiJob() ? cfg.comm.transport : undefined);
  if (asked !== undefined && isMpiJobTransport(asked)) {
    const job = mpiJob();
    if (!job) {
      throw new CliError(
        `--transport ${asked} runs inside an MPI job: mpiexec.mpich -n N node bin/moe-actors.mjs grad --transport ${asked} … (no MPI job found: PMI_SIZE is unset)`,
      );
    }
    if (ranks !== undefined && ranks !== job.size) {
      throw new CliError(
        `--ranks ${ranks} does not match the MPI job of ${job.size} processes; drop --ranks or start mpiexec.mpich -n ${ranks}`,
      );
    }
    if (asked === 'ccl') requireCcl();
    return { distributed: true, transport: asked, size: job.size, writer: job.rank === 0 };
  }
  if (ranks === undefined || ranks === 1)
    return { distributed: false, transport: cfg.comm.transport, size: 1, writer: true };
  if (isMpiJobTransport(cfg.comm.transport)) {
    throw new CliError(
      `--ranks ${ranks} with [comm] transport = "${cfg.comm.transport}": pass --transport inproc or threads, or run under mpiexec.mpich -n ${ranks} with --transport ${cfg.comm.transport}`,
    );
  }
  return { distributed: true, transport: cfg.comm.transport, size: ranks, writer: true };
}

export async function runGrad(opts: GradOptions, overrides: readonly string[]): Promise<void> {
  const t0 = performance.now();
  if (opts.transport !== undefined && !TRANSPORTS.includes(opts.transport as TransportName)) {
    throw new CliError(`--transport ${opts.transport}: unknown transport; use one of ${TRANSPORTS.join(', ')}`);
  }
  requireFile(opts.config, '--config');
  requireFile(opts.checkpoint, '--checkpoint');
  requireFile(opts.batch, '--batch');
  requireDistinctOutput(opts.out, '--out', [
    [opts.config, '--config'],
    [opts.checkpoint, '--checkpoint'],
    [opts.batch, '--batch'],
  ]);
  if (existsSync(opts.out) && statSync(opts.out).isDirectory())
    throw new CliError(`--out ${opts.out} is a folder; give the path of the .safetensors file to write`);
  const extra = opts.transport !== undefined ? ['--comm.transport', opts.transport] : [];
  const cfg = loadJobConfig(opts.config, [...overrides, ...extra]);
  const where = placement(opts, cfg);
  const model = modelConfigOf(cfg);
  const batch = readBatch(opts.batch, model.args.vocab_size, cfg.training.seq_len);
  const weights = readSafetensors(opts.checkpoint);
  const ac = acModeOf(cfg);
  const say = (m: string) => where.writer && console.log(m);

  let loss: number;
  let grads: Map<string, { shape: readonly number[]; data: Float32Array }>;
  let paramNames: string[];
  if (!where.distributed) {
    const m = loadModel(model, weights);
    paramNames = m.paramNames();
    const n = microbatchesOf(cfg, 1);
    if (batch.B % n !== 0)
      throw new CliError(
        `the batch of ${batch.B} sequences does not split into ${n} microbatches ([training] global_batch_size / local_batch_size); use a batch size divisible by ${n}`,
      );
    const globalValidTokens = countValid(batch.labels);
    loss = 0;
    for (const mb of microbatches(batch, n)) {
      loss += m.forward(mb, { globalValidTokens, ac }).loss;
      m.backward();
    }
    grads = new Map(
      paramNames.map((name) => [
        name,
        { shape: m.unitOf(name).layout.entries.find((e) => e.name === name)!.globalShape, data: m.grad(name) },
      ]),
    );
    say(pc.dim(`grad: one rank, ${batch.B}×${batch.S} tokens, ${n} microbatch${n === 1 ? '' : 'es'}, AC ${ac.mode}`));
  } else {
    const plan = planJob(cfg, where.size);
    const degree = plan.layout.sizes.batch;
    const n = microbatchesOf(cfg, degree);
    if (batch.B % (degree * n) !== 0) {
      throw new CliError(
        `the batch of ${batch.B} sequences does not split into ${degree} data-parallel rank${degree === 1 ? '' : 's'} × ${n} microbatch${n === 1 ? '' : 'es'}; ` +
          `use a batch size divisible by ${degree * n} or other [parallelism] degrees`,
      );
    }
    // The ranks load the checkpoint themselves; checking it here first turns a bad file into one error instead of
    // a failure on every rank (and, under mpi, an aborted job).
    paramNames = loadModel(model, weights).paramNames();
    const ranksOnNode = isMpiJobTransport(where.transport) ? Number(process.env.MPI_LOCALNRANKS ?? 1) : where.size;
    const job: RankJob = {
      ...rankJobOf(cfg, {
        dispatch: plan.dispatch.choice,
        gradReduce: plan.gradReduce.choice,
        threads: cfg.comm.blas_threads || Math.max(1, Math.floor(availableParallelism() / Math.max(1, ranksOnNode))),
      }),
      model,
      weights: resolve(opts.checkpoint),
    };
    say(
      pc.dim(
        `grad: ${where.size} ranks on ${where.transport}/${cfg.comm.profile}, dispatch ${plan.dispatch.choice}, grad reduce ${plan.gradReduce.choice}, ${degree} data-parallel × ${n} microbatch${n === 1 ? '' : 'es'}, AC ${ac.mode}`,
      ),
    );
    const args: DistributedRunArgs = {
      job,
      tokens: batch.tokens,
      labels: batch.labels,
      B: batch.B,
      S: batch.S,
      microbatches: n,
      mode: 'grad',
    };
    const r = await launch<DistributedRunArgs, DistributedRunResult>(
      {
        transport: where.transport,
        size: where.size,
        profile: cfg.comm.profile,
        // Start-up and one step: torchtitan's init_timeout_seconds covers both.
        timeoutMs: cfg.comm.init_timeout_seconds * 1000,
        seed: cfg.comm.seed,
        ranksPerNode: cfg.comm.ranks_per_node || undefined,
        flightEntries: cfg.comm.flight_recorder_entries,
      },
      { module: RANK_PROGRAM },
      args,
    );
    const failure = launchFailure('grad', r);
    if (failure) throw new Error(failure);
    if (!where.writer) return;
    const rank0 = r.outcomes.find((o) => o.ok && o.rank === 0) as { value: DistributedRunResult } | undefined;
    if (!rank0?.value.tensors) throw new Error('internal: rank 0 returned no gradients');
    loss = rank0.value.losses[0]!;
    grads = new Map(Object.entries(rank0.value.tensors));
  }

  const out: Record<string, SafeTensorInput> = { loss: { shape: [], data: Float32Array.of(loss) } };
  for (const name of paramNames) {
    const g = grads.get(name);
    if (!g) throw new Error(`internal: no gradient for parameter ${name}`);
    out[`grad.${name}`] = { shape: g.shape, data: g.data };
  }
  ensureDir(dirname(resolve(opts.out)), '--out');
  writeSafetensors(opts.out, out, {
    format: 'moe-actors grad',
    config: opts.config,
    checkpoint: opts.checkpoint,
    batch: opts.batch,
    ranks: String(where.size),
    transport: where.distributed ? where.transport : 'none',
  });
  say(`loss: ${Math.fround(loss).toPrecision(9)}`);
  say(`wrote ${opts.out}: loss and ${paramNames.length} gradients (${((performance.now() - t0) / 1000).toFixed(2)} s)`);
}
