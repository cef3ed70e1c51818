// `npm run bench:comm`: bandwidth of all_gather, reduce_scatter, all_reduce and all_to_all_v at 1 MiB and 16 MiB
// per rank on 2 ranks, for the threads transport and the mpi transport (`mpiexec.mpich -n 2`, started here), beside
// the limits they are judged against, measured in the same run: memcpy (Float32Array.set) in this process, and a
// plain C MPI program doing the same collectives (scripts/bench/c/comm_bench.c, compiled here with mpicc.mpich).
//
// Every side times the same way: a barrier, then `inner` back-to-back calls; `reps` repetitions; each rank takes
// its median per-call time and the slowest rank's median counts. Bytes per call, with S = bytes each rank
// contributes: all_gather P·S (received, own block included), reduce_scatter P·S (reduced), all_reduce S,
// all_to_all_v S (S/P to each rank). GB/s = 1e9 bytes/s.
//
// The machine is shared: other jobs can only slow a measurement down. So the whole set (memcpy, threads, mpi, C)
// runs `--runs` times interleaved, and each result is its best run (the smallest of its medians), which compares
// the transports and their limits under the same, least disturbed, conditions. The C program also times the
// nonblocking calls polled with MPI_Test (`c_mpi_nb_*`), which is what the mpi transport does.
//
// This module is also the rank program of both transports (`rankMain`).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Communicator } from '../../src/comm/communicator.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { mpiAvailability } from '../../src/comm/mpi/native.ts';
import { mpiEnv, spawnMpi, MPIEXEC } from '../../src/comm/mpi/spawn.ts';
import { DEFAULT_SLOT_BYTES, launchThreads } from '../../src/comm/threads/launch.ts';
import { machineInfo, median, ROOT, writeReport, type BenchReport, type BenchResult } from './common.ts';

export const OPS = ['allgather', 'reducescatter', 'allreduce', 'alltoallv'] as const;
export type Op = (typeof OPS)[number];
export const SIZES: readonly { label: string; bytes: number }[] = [
  { label: '1MiB', bytes: 1 << 20 },
  { label: '16MiB', bytes: 16 << 20 },
];

export interface CommBenchArgs {
  reps: number;
  sizes: number[];
}

/** One (op, size) timing: the slowest rank's median milliseconds per call. */
export interface Timing {
  op: Op;
  bytesPerRank: number;
  ms: number;
  /** C baseline only. */
  mode?: 'blocking' | 'nonblocking';
}

/** Per (op, size, mode): the best (smallest) time over runs. */
function best(runs: readonly (Timing[] | null)[]): Timing[] | null {
  const ok = runs.filter((r): r is Timing[] => r !== null);
  if (ok.length === 0) return null;
  const by = new Map<string, Timing>();
  for (const t of ok.flat()) {
    const k = `${t.op}/${t.bytesPerRank}/${t.mode ?? ''}`;
    const prev = by.get(k);
    if (!prev || t.ms < prev.ms) by.set(k, t);
  }
  return [...by.values()];
}

const inner = (bytes: number) => (bytes >= 8 << 20 ? 2 : 8);

export function bytesMoved(op: Op, bytesPerRank: number, P: number): number {
  return op === 'allgather' || op === 'reducescatter' ? bytesPerRank * P : bytesPerRank;
}

function caller(w: Communicator, op: Op, bytes: number): () => Promise<void> {
  const P = w.size;
  const n = bytes / 4;
  const big = new Float32Array(n * P).map((_, i) => i % 97);
  const small = new Float32Array(n).map((_, i) => i % 89);
  const counts = new Array<number>(P).fill(Math.floor(n / P));
  switch (op) {
    case 'allgather':
      return () => w.allGather(small, big);
    case 'reducescatter':
      return () => w.reduceScatter(big, small, { op: 'sum' });
    case 'allreduce':
      return () => w.allReduce(small, { op: 'sum' });
    case 'alltoallv': {
      const recv = new Float32Array(n);
      return () => w.allToAllV(small, counts, recv, counts);
    }
  }
}

/** Rank program: times every op at every size on the world communicator; rank 0 returns the slowest medians. */
export async function rankMain(ctx: RankContext<CommBenchArgs>): Promise<Timing[]> {
  const w = ctx.world;
  const out: Timing[] = [];
  const slowest = new Float64Array(1);
  for (const bytes of ctx.args.sizes) {
    for (const op of OPS) {
      const call = caller(w, op, bytes);
      const k = inner(bytes);
      // As many warm-up calls as a timed loop has (the C baseline does the same): JIT, page faults, connections.
      for (let i = 0; i < Math.max(3, k); i++) await call();
      const t: number[] = [];
      for (let r = 0; r < ctx.args.reps; r++) {
        await w.barrier();
        const t0 = performance.now();
        for (let i = 0; i < k; i++) await call();
        t.push((performance.now() - t0) / k);
      }
      slowest[0] = median(t);
      await w.allReduce(slowest, { op: 'max' });
      out.push({ op, bytesPerRank: bytes, ms: slowest[0] });
    }
  }
  return out;
}

function memcpyGbps(bytes: number, reps = 15): number {
  const a = new Float32Array(bytes / 4).map((_, i) => i);
  const b = new Float32Array(bytes / 4);
  for (let i = 0; i < 3; i++) b.set(a);
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    b.set(a);
    t.push(performance.now() - t0);
  }
  return bytes / (median(t) / 1e3) / 1e9;
}

const label = (bytes: number) => SIZES.find((s) => s.bytes === bytes)?.label ?? `${bytes}B`;
const gbps = (op: Op, bytes: number, P: number, ms: number) => bytesMoved(op, bytes, P) / (ms / 1e3) / 1e9;

function cBench(bin: string, reps: number, sizes: number[], notes: string[]): Timing[] | null {
  const r = spawnSync(MPIEXEC, ['-n', '2', bin, String(reps), ...sizes.map(String)], { env: mpiEnv(), encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) {
    notes.push(`C MPI baseline failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    return null;
  }
  return r.stdout
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { op: Op; mode: 'blocking' | 'nonblocking'; bytes_per_rank: number; ms: number })
    .map((j) => ({ op: j.op, mode: j.mode, bytesPerRank: j.bytes_per_rank, ms: j.ms }));
}

function compileC(notes: string[]): string | null {
  const src = join(ROOT, 'scripts', 'bench', 'c', 'comm_bench.c');
  const bin = join(ROOT, 'outputs', 'bench', 'c', 'comm_bench');
  mkdirSync(join(ROOT, 'outputs', 'bench', 'c'), { recursive: true });
  try {
    execFileSync('mpicc.mpich', ['-O2', '-o', bin, src], { stdio: 'pipe' });
    return bin;
  } catch (e) {
    notes.push(`C MPI baseline not built (mpicc.mpich -O2 ${src}): ${(e as Error).message.split('\n', 1)[0]}`);
    return null;
  }
}

export async function run(argv: string[]): Promise<void> {
  const opt = (name: string, dflt: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) || dflt : dflt);
  const reps = opt('--reps', 7);
  const runs = opt('--runs', 3);
  const sizes = SIZES.map((s) => s.bytes);
  const args: CommBenchArgs = { reps, sizes };
  const P = 2;
  const self = fileURLToPath(import.meta.url);
  const notes: string[] = [
    `2 ranks; bytes per call with S = bytes per rank: all_gather and reduce_scatter P·S, all_reduce and all_to_all_v S; median of ${reps} reps of a timed loop, slowest rank; best of ${runs} interleaved runs`,
    'c_mpi_*: blocking MPI calls (the baseline); c_mpi_nb_*: MPI_I* polled with MPI_Test, as the mpi transport issues them',
    'env: the MPI runs (transport and C baseline) get UCX_MEM_EVENTS=no (toolchain.md: UCX memory hooks crash V8 under MPICH ch4:ucx); nothing else is changed',
    `machine shared with other jobs while measured: load average ${(await import('node:os')).loadavg().map((x) => x.toFixed(1)).join(' / ')} at start`,
  ];
  const results: BenchResult[] = [];
  const put = (name: string, value: number, unit: string, target?: number, note?: string) => results.push({ name, value, unit, ...(target !== undefined ? { target } : {}), ...(note ? { note } : {}) });

  const avail = mpiAvailability();
  if (!avail.available) notes.push(`mpi transport unavailable: ${avail.reason}`);
  const cBin = avail.available ? compileC(notes) : null;
  const memcpyRuns: number[] = [];
  const memcpy64Runs: number[] = [];
  const thRuns: (Timing[] | null)[] = [];
  const mpiRuns: (Timing[] | null)[] = [];
  const cRuns: (Timing[] | null)[] = [];
  for (let i = 1; i <= runs; i++) {
    memcpyRuns.push(memcpyGbps(16 << 20));
    memcpy64Runs.push(memcpyGbps(64 << 20, 7));
    console.log(`run ${i}/${runs}: threads transport, 2 worker threads …`);
    const th = await launchThreads<CommBenchArgs, Timing[]>({ transport: 'threads', size: P, timeoutMs: 60_000 }, { module: self }, args);
    thRuns.push(th.outcomes[0]?.ok ? th.outcomes[0].value : null);
    if (!th.outcomes[0]?.ok) notes.push(`threads run ${i} failed: ${th.diagnosis ?? JSON.stringify(th.outcomes)}`);
    if (!avail.available) continue;
    console.log(`run ${i}/${runs}: mpi transport, ${MPIEXEC} -n ${P} …`);
    const res = await spawnMpi<Timing[]>({ n: P, entry: { module: self }, args, world: { timeoutMs: 60_000 }, jobTimeoutMs: 300_000 });
    const o = res.outcomes[0];
    mpiRuns.push(o?.ok ? o.value : null);
    if (!o?.ok) notes.push(`mpi run ${i} failed: ${res.diagnosis ?? res.stderr.slice(-500)}`);
    if (cBin) {
      console.log(`run ${i}/${runs}: C MPI baseline, ${MPIEXEC} -n ${P} …`);
      cRuns.push(cBench(cBin, reps, sizes, notes));
    }
  }
  const memcpy = Math.max(...memcpyRuns);
  put('memcpy_gbps', memcpy, 'GB/s', undefined, 'Float32Array.set, 16 MiB, one thread');
  put('memcpy_64MiB_gbps', Math.max(...memcpy64Runs), 'GB/s', undefined, 'Float32Array.set, 64 MiB');
  const thTimes = best(thRuns);
  const mpiTimes = best(mpiRuns);
  const cAll = best(cRuns);
  const cTimes = cAll?.filter((t) => t.mode === 'blocking') ?? null;
  const cNbTimes = cAll?.filter((t) => t.mode === 'nonblocking') ?? null;

  for (const [prefix, times] of [
    ['threads', thTimes],
    ['mpi', mpiTimes],
    ['c_mpi', cTimes],
    ['c_mpi_nb', cNbTimes],
  ] as const) {
    for (const t of times ?? []) put(`${prefix}_${t.op}_${label(t.bytesPerRank)}_gbps`, gbps(t.op, t.bytesPerRank, P, t.ms), 'GB/s', undefined, `${t.ms.toFixed(3)} ms/call`);
  }
  const find = (times: Timing[] | null, op: Op, bytes: number) => times?.find((t) => t.op === op && t.bytesPerRank === bytes);
  const big = 16 << 20;
  const thAg = find(thTimes, 'allgather', big);
  if (thAg) {
    put('threads_allgather_vs_memcpy', gbps('allgather', big, P, thAg.ms) / memcpy, 'fraction', 0.5, 'all_gather 16 MiB/rank, GB/s received per rank over memcpy GB/s');
  }
  for (const op of OPS) {
    const m = find(mpiTimes, op, big);
    const c = find(cTimes, op, big);
    if (!m || !c) continue;
    const name = op === 'allgather' ? 'mpi_allgather_vs_c' : `mpi_${op}_vs_c`;
    put(name, c.ms / m.ms, 'fraction', op === 'allgather' ? 0.85 : undefined, `16 MiB/rank, C time over transport time`);
  }
  const mAg = find(mpiTimes, 'allgather', big);
  const nbAg = find(cNbTimes, 'allgather', big);
  if (mAg && nbAg) put('mpi_allgather_vs_c_nb', nbAg.ms / mAg.ms, 'fraction', undefined, 'against MPI_Iallgather + MPI_Test in C: the cost of the binding and the event loop alone');

  const report: BenchReport = {
    bench: 'comm',
    when: new Date().toISOString(),
    machine: machineInfo('n/a (communication bench)', mpiEnv()),
    config: { ranks: P, reps, runs, sizes_bytes_per_rank: sizes, threads_slot_bytes: DEFAULT_SLOT_BYTES, mpiexec: MPIEXEC, c_baseline: existsSync(join(ROOT, 'outputs', 'bench', 'c', 'comm_bench')) },
    results,
    notes,
  };
  writeReport(report);
}
