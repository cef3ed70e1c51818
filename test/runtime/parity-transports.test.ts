// Parity subsets of test/actors/distributed-parity.test.ts on the real transports: the same weights and global
// batch through the distributed runtime on worker threads, and as MPI processes under `mpiexec.mpich -n 2` and
// `-n 4` (test/runtime/programs/parity-driver.ts, all cases of one rank count in one MPI job), against the
// single-rank model: 3 optimizer steps with clipping and the expert-bias update; losses within 1e-5 relative,
// grad norms 1e-4, every parameter 1e-4 (max|diff| / max|ref|). The MPI tests skip only when the build left
// native/mpi/UNAVAILABLE (MPICH missing), saying so.
import { afterAll, describe, expect, it } from 'vitest';
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../../src/comm/launch.ts';
import type { ParallelDegrees } from '../../src/comm/mesh-layout.ts';
import { spawnMpi } from '../../src/comm/mpi/spawn.ts';
import type { AcMode } from '../../src/models/model/ac.ts';
import { Model } from '../../src/models/model/model.ts';
import { SingleRankTrainer } from '../../src/models/model/train-step.ts';
import { loadWeights } from '../../src/models/model/weights.ts';
import { readSafetensors } from '../../src/models/safetensors.ts';
import type { RankJob } from '../../src/actors/rank-host.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../../src/actors/programs/distributed-run.ts';
import type { DispatchStrategy } from '../../src/protocols/strategies.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import { distributedCaseOf, relMaxDiff, syntheticBatch, type DistributedCase } from '../models/fixtures.ts';
import { cclSkip } from '../comm/ccl-skip.ts';
import { MPI_SKIP, tmpRoot } from './helpers.ts';
import type { ParityCaseJson, ParityCaseResult, ParityDriverArgs } from './programs/parity-driver.ts';

const PROGRAM = fileURLToPath(new URL('../../src/actors/programs/distributed-run.ts', import.meta.url));
const DRIVER = fileURLToPath(new URL('./programs/parity-driver.ts', import.meta.url));
const root = tmpRoot('parity');
afterAll(() => rmSync(root, { recursive: true, force: true }));

const B = 8;
const S = 16;
function batchOf(f: DistributedCase): { tokens: Int32Array; labels: Int32Array } {
  return syntheticBatch(f.model.args.vocab_size, B, S, 11);
}

interface Case {
  name: string;
  fixture: DistributedCase;
  ranks: number;
  degrees: Partial<ParallelDegrees>;
  dispatch: DispatchStrategy;
  ac: AcMode;
  ga: number;
}

const NONE: AcMode = { mode: 'none' };
const SEL: AcMode = { mode: 'selective', every: 2 };
const FULL: AcMode = { mode: 'full' };
const llama = distributedCaseOf('llama4_shared2_train');
const dsv3 = distributedCaseOf('dsv3_groups_softmax_train');
const EP2x2 = { ranks: 2, degrees: { dp_shard: 2, ep: 2 } };
const CASES_2: Case[] = [
  { name: 'fsdp2-ep2 a2a AC selective-2 GA 1', fixture: llama, ...EP2x2, dispatch: 'a2a', ac: SEL, ga: 1 },
  {
    name: 'fsdp2-ep2 allgather-padded AC full GA 2',
    fixture: llama,
    ...EP2x2,
    dispatch: 'allgather-padded',
    ac: FULL,
    ga: 2,
  },
  { name: 'fsdp2-ep2 allgather-rs AC none GA 2', fixture: llama, ...EP2x2, dispatch: 'allgather-rs', ac: NONE, ga: 2 },
];
const CASES_4: Case[] = [
  {
    name: 'fsdp4-ep4 a2a AC full GA 2',
    fixture: llama,
    ranks: 4,
    degrees: { dp_shard: 4, ep: 4 },
    dispatch: 'a2a',
    ac: FULL,
    ga: 2,
  },
  {
    name: 'dsv3 hsdp2x2-ep2 allgather-rs AC selective-2 GA 1',
    fixture: dsv3,
    ranks: 4,
    degrees: { dp_replicate: 2, dp_shard: 2, ep: 2 },
    dispatch: 'allgather-rs',
    ac: SEL,
    ga: 1,
  },
];

function jobOf(c: Case): RankJob {
  const f = c.fixture;
  return {
    model: f.model,
    degrees: c.degrees,
    dispatch: c.dispatch,
    gradReduce: 'sum',
    divideFactor: 1,
    reshard: 'default',
    ac: c.ac,
    adamw: f.adamw,
    schedule: f.schedule,
    maxNorm: f.maxNorm,
    seed: 0,
    weights: f.weights,
  };
}

/** The single-rank run of the same batch, 3 steps (cached per fixture and AC mode). */
const singles = new Map<
  string,
  { steps: { loss: number; gradNorm: number; lr: number }[]; params: Map<string, Float32Array> }
>();
function single(f: DistributedCase, ac: AcMode) {
  const key = `${f.name}/${JSON.stringify(ac)}`;
  if (!singles.has(key)) {
    const t = new SingleRankTrainer(Model.build(f.model, { kernels: getKernels() }), {
      adamw: f.adamw,
      schedule: f.schedule,
      maxNorm: f.maxNorm,
      ac,
    });
    loadWeights(t.model, readSafetensors(f.weights));
    const steps = [0, 1, 2].map(() => t.step([{ ...batchOf(f), B, S }]));
    const params = new Map(t.model.paramNames().map((n) => [n, Float32Array.from(t.model.param(n))]));
    for (const m of t.model.moeLayers())
      params.set(`layers.${m.layerId}.moe.expert_bias`, Float32Array.from(m.buffers.expertBias ?? []));
    singles.set(key, { steps, params });
  }
  return singles.get(key)!;
}

/** Compares a distributed run with the single-rank one; returns the worst relative errors (for the log). */
function expectParity(
  c: Case,
  d: { losses: number[]; gradNorms: number[]; lrs: number[]; params: Record<string, ArrayLike<number>> },
): string {
  const ref = single(c.fixture, c.ac);
  let worstLoss = 0;
  let worstParam = 0;
  expect(d.losses).toHaveLength(3);
  for (let s = 0; s < 3; s++) {
    const want = ref.steps[s]!;
    const rl = Math.abs(d.losses[s]! - want.loss) / want.loss;
    worstLoss = Math.max(worstLoss, rl);
    expect(rl, `${c.name} step ${s + 1} loss`).toBeLessThan(1e-5);
    expect(Math.abs(d.gradNorms[s]! - want.gradNorm) / want.gradNorm, `${c.name} step ${s + 1} grad norm`).toBeLessThan(
      1e-4,
    );
    expect(d.lrs[s]).toBeCloseTo(want.lr, 12);
  }
  expect(Object.keys(d.params).sort()).toEqual([...ref.params.keys()].sort());
  for (const [name, want] of ref.params) {
    const e = relMaxDiff(d.params[name]!, want);
    worstParam = Math.max(worstParam, e);
    expect(e, `${c.name} ${name}`).toBeLessThan(1e-4);
  }
  return `loss rel ≤ ${worstLoss.toExponential(1)}, params rel ≤ ${worstParam.toExponential(1)}`;
}

describe('parity on the threads transport (worker threads, SharedArrayBuffer collectives)', () => {
  for (const c of [...CASES_2, CASES_4[0]!]) {
    it(`${c.name}: 3 steps match one rank`, async () => {
      const t0 = performance.now();
      const args: DistributedRunArgs = {
        job: jobOf(c),
        ...batchOf(c.fixture),
        B,
        S,
        microbatches: c.ga,
        mode: 'train',
        steps: 3,
      };
      const r = await launch<DistributedRunArgs, DistributedRunResult>(
        { transport: 'threads', size: c.ranks, timeoutMs: 30_000 },
        { module: PROGRAM },
        args,
      );
      const failed = r.outcomes.filter((o) => !o.ok);
      expect(failed.map((f) => (f as { error: string }).error).join('\n') + (r.diagnosis ?? '')).toBe('');
      const d = (r.outcomes.find((o) => o.rank === 0) as { value: DistributedRunResult }).value;
      const params = Object.fromEntries(Object.entries(d.tensors!).map(([k, v]) => [k, v.data]));
      console.info(
        `threads ${c.ranks} ranks ${c.name}: ${expectParity(c, { ...d, params })}, ${(performance.now() - t0).toFixed(0)} ms`,
      );
    });
  }
});

async function mpiParity(cases: Case[], n: number, transport: 'mpi' | 'ccl' = 'mpi'): Promise<void> {
  const out = join(root, `parity-${transport}-${n}.json`);
  const args: ParityDriverArgs = {
    out,
    cases: cases.map((c): ParityCaseJson => {
      const b = batchOf(c.fixture);
      return {
        name: c.name,
        job: jobOf(c),
        tokens: Array.from(b.tokens),
        labels: Array.from(b.labels),
        B,
        S,
        microbatches: c.ga,
        steps: 3,
      };
    }),
  };
  const res = await spawnMpi<{ rank: number; cases: number }>({
    n,
    transport,
    entry: { module: DRIVER },
    args,
    world: { timeoutMs: 60_000, dumpDir: join(root, `dumps-${transport}-${n}`) },
    jobTimeoutMs: 150_000,
  });
  const failed = res.outcomes.filter((o) => !o.ok);
  expect(
    failed.length,
    `${failed.map((f) => `rank ${f.rank}: ${(f as { error: string }).error}`).join('\n')}\n${res.diagnosis ?? ''}\n${res.stderr.slice(-3000)}`,
  ).toBe(0);
  expect(res.exitCode).toBe(0);
  expect(res.outcomes.map((o) => (o as { value: { rank: number; cases: number } }).value)).toEqual(
    Array.from({ length: n }, (_, rank) => ({ rank, cases: cases.length })),
  );
  const results = JSON.parse(readFileSync(out, 'utf8')) as ParityCaseResult[];
  expect(results.map((r) => r.name)).toEqual(cases.map((c) => c.name));
  for (const [i, c] of cases.entries()) {
    const r = results[i]!;
    expect(r.worldSize).toBe(n);
    console.info(`${transport} -n ${n} ${c.name}: ${expectParity(c, r)}, ${r.ms.toFixed(0)} ms`);
  }
  console.info(`${transport} -n ${n}: job ${res.ms.toFixed(0)} ms`);
}

describe.skipIf(MPI_SKIP !== null)(`parity under mpiexec.mpich${MPI_SKIP ? ` — ${MPI_SKIP}` : ''}`, () => {
  it(`-n 2: ${CASES_2.map((c) => c.name).join('; ')}`, { timeout: 180_000 }, () => mpiParity(CASES_2, 2));
  it(`-n 4: ${CASES_4.map((c) => c.name).join('; ')}`, { timeout: 180_000 }, () => mpiParity(CASES_4, 4));
});

// The same 2-rank cases with oneCCL carrying every collective (the ccl transport), and at 4 ranks EP with HSDP
// (replicas 2 × shards 2, EP 2: the replica all-reduce and the EP groups are oneCCL communicators of MPI splits).
// One 4-rank case only: 4 processes with oneCCL's workers on 2 cores cost ~1 min.
describe.skipIf(cclSkip('in test/runtime/parity-transports.test.ts (parity at 2 and 4 ranks)'))(
  'parity on the ccl transport (oneCCL) under mpiexec.mpich',
  () => {
    it(`-n 2: ${CASES_2.map((c) => c.name).join('; ')}`, { timeout: 240_000 }, () => mpiParity(CASES_2, 2, 'ccl'));
    it(`-n 4: ${CASES_4[1]!.name}`, { timeout: 240_000 }, () => mpiParity([CASES_4[1]!], 4, 'ccl'));
  },
);
