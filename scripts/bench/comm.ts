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
// The machine is shared, and on this VM even its memory bandwidth moves with other tenants' load (a 16 MiB memcpy
// reads anywhere from 6 to 14 GB/s from one minute to the next). So the whole set (memcpy, threads, mpi, C) runs
// `--runs` times interleaved; each result is the median over runs of the per-run medians, with the runs' range in
// its note, and each ratio (threads against memcpy, mpi against C) is taken within a run — the two sides measured
// back to back — then summarised the same way. The C program also times the nonblocking calls polled with
// MPI_Test (`c_mpi_nb_*`), which is what the mpi transport does.
//
// Where native/ccl is built, the ccl transport (`ccl_*`, the same job with oneCCL carrying the collectives) runs
// too, beside a plain C++ program on the same oneCCL library (scripts/bench/c/comm_bench_ccl.cpp, compiled here
// with g++ against the headers the addon was built with): `cpp_ccl_*` waits with event.wait(), `cpp_ccl_nb_*`
// polls event.test() as the transport does. oneCCL's own polling thread shares the 2 cores with the ranks, so
// ccl is judged against that program, not against MPI.
//
// Buffers are allocated as the runtime allocates them on each transport: on the threads transport on a
// SharedArrayBuffer (the actors' FSDP shards and pools use Allocator.sharedF32 there), so peers read a send array
// in place; `threads_ab_*` repeats the threads runs with plain ArrayBuffers (every block staged through the
// sender's slot). The mpi transport and the C program use ordinary memory.
//
// This module is also the rank program of both transports (`rankMain`).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Communicator } from '../../src/comm/communicator.ts';
import type { RankContext } from '../../src/comm/launch.ts';
import { cclAddonDir, cclAvailability } from '../../src/comm/ccl/native.ts';
import { mpiAvailability } from '../../src/comm/mpi/native.ts';
import { mpiEnv, spawnMpi, MPIEXEC } from '../../src/comm/mpi/spawn.ts';
import { COPY_NATIVE_MIN, COPY_STREAM_MIN } from '../../src/comm/threads/copy.ts';
import { DEFAULT_DIRECT_MIN_BYTES, DEFAULT_SLOT_BYTES, launchThreads } from '../../src/comm/threads/launch.ts';
import { getKernels, type Kernels } from '../../src/tensor/kernels.ts';
import { loadNote, machineInfo, median, ROOT, writeReport, type BenchReport, type BenchResult } from './common.ts';

export const OPS = ['allgather', 'reducescatter', 'allreduce', 'alltoallv'] as const;
export type Op = (typeof OPS)[number];
export const SIZES: readonly { label: string; bytes: number }[] = [
  { label: '1MiB', bytes: 1 << 20 },
  { label: '16MiB', bytes: 16 << 20 },
];

export interface CommBenchArgs {
  reps: number;
  sizes: number[];
  /** Allocate the buffers on a SharedArrayBuffer (threads transport). */
  shared?: boolean;
  /** Rank 0 times a 16 MiB memcpy right before each timed repetition of all_gather 16 MiB (the ratio's reference). */
  memcpyRef?: boolean;
}

/** One (op, size) timing: the slowest rank's median milliseconds per call. */
export interface Timing {
  op: Op;
  bytesPerRank: number;
  ms: number;
  /** C baseline only. */
  mode?: 'blocking' | 'nonblocking';
  /** memcpyRef: median GB/s of rank 0's memcpy samples, taken between this op's timed repetitions. */
  memcpyGbps?: number;
}

/** Per (op, size, mode) over runs: the median time, and every run's time (for the range). */
interface Summary extends Timing {
  runs: number[];
}

function summarise(runs: readonly (Timing[] | null)[]): Summary[] | null {
  const ok = runs.filter((r): r is Timing[] => r !== null);
  if (ok.length === 0) return null;
  const by = new Map<string, Summary>();
  for (const t of ok.flat()) {
    const k = `${t.op}/${t.bytesPerRank}/${t.mode ?? ''}`;
    const prev = by.get(k);
    if (prev) prev.runs.push(t.ms);
    else by.set(k, { ...t, runs: [t.ms] });
  }
  for (const v of by.values()) v.ms = median(v.runs);
  return [...by.values()];
}

const inner = (bytes: number) => (bytes >= 8 << 20 ? 2 : 8);
/**
 * Untimed calls before each (op, size): at least a timed loop's worth, and about 256 MiB per rank (256 calls at
 * 1 MiB, 16 at 16 MiB), so JIT tiering, page faults and connection set-up are over before the timing starts (the
 * first collective of a fresh MPI job read 0.26-0.52 ms at 1 MiB with 8 warm-up calls, 0.25-0.30 later in the same
 * job). The same count on every rank (they are collectives), and in the C program.
 */
export const warmupCalls = (bytes: number) => Math.max(3, inner(bytes), Math.ceil((256 << 20) / bytes));

export function bytesMoved(op: Op, bytesPerRank: number, P: number): number {
  return op === 'allgather' || op === 'reducescatter' ? bytesPerRank * P : bytesPerRank;
}

function filled(n: number, shared: boolean, mod: number): Float32Array {
  const a = new Float32Array(shared ? new SharedArrayBuffer(n * 4) : new ArrayBuffer(n * 4));
  for (let i = 0; i < n; i++) a[i] = i % mod;
  return a;
}

function caller(w: Communicator, op: Op, bytes: number, shared: boolean): () => Promise<void> {
  const P = w.size;
  const n = bytes / 4;
  const big = filled(n * P, shared, 97);
  const small = filled(n, shared, 89);
  const counts = new Array<number>(P).fill(Math.floor(n / P));
  switch (op) {
    case 'allgather':
      return () => w.allGather(small, big);
    case 'reducescatter':
      return () => w.reduceScatter(big, small, { op: 'sum' });
    case 'allreduce':
      return () => w.allReduce(small, { op: 'sum' });
    case 'alltoallv': {
      const recv = filled(n, shared, 1);
      return () => w.allToAllV(small, counts, recv, counts);
    }
  }
}

/** Rank program: times every op at every size on the world communicator; rank 0 returns the slowest medians. */
export async function rankMain(ctx: RankContext<CommBenchArgs>): Promise<Timing[]> {
  const w = ctx.world;
  const out: Timing[] = [];
  const slowest = new Float64Array(1);
  const REF = 16 << 20;
  // The memory bandwidth of this VM moves with other tenants' load from one second to the next, so the memcpy the
  // all_gather is judged against is timed within the same few milliseconds: by rank 0, while rank 1 sleeps in the
  // barrier, before each timed repetition (one copy to bring the arrays back into the cache, then the median of 3).
  const ref =
    ctx.args.memcpyRef && ctx.rank === 0 ? { a: filled(REF / 4, false, 1 << 20), b: new Float32Array(REF / 4) } : null;
  if (ref) for (let i = 0; i < 3; i++) ref.b.set(ref.a);
  for (const bytes of ctx.args.sizes) {
    for (const op of OPS) {
      const call = caller(w, op, bytes, ctx.args.shared ?? false);
      const k = inner(bytes);
      for (let i = 0; i < warmupCalls(bytes); i++) await call();
      const t: number[] = [];
      const mc: number[] = [];
      for (let r = 0; r < ctx.args.reps; r++) {
        if (ref && op === 'allgather' && bytes === REF) {
          // As memcpyGbps times it: a copy repeated with its arrays warm (the first one only brings them back).
          ref.b.set(ref.a);
          const s: number[] = [];
          for (let j = 0; j < 3; j++) {
            const t0 = performance.now();
            ref.b.set(ref.a);
            s.push(performance.now() - t0);
          }
          mc.push(REF / (median(s) / 1e3) / 1e9);
        }
        await w.barrier();
        const t0 = performance.now();
        for (let i = 0; i < k; i++) await call();
        t.push((performance.now() - t0) / k);
      }
      slowest[0] = median(t);
      await w.allReduce(slowest, { op: 'max' });
      out.push({ op, bytesPerRank: bytes, ms: slowest[0], ...(mc.length > 0 ? { memcpyGbps: median(mc) } : {}) });
    }
  }
  return out;
}

function memcpyGbps(bytes: number, reps = 15): number {
  const a = filled(bytes / 4, false, 1 << 20);
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

/** The native kernels' streaming copy (what the threads transport uses for large copies), for reference; null without the addon. */
function streamCopyGbps(bytes: number, reps = 15): number | null {
  let k: Kernels;
  try {
    k = getKernels();
  } catch {
    return null;
  }
  if (k.impl !== 'native') return null;
  const a = filled(bytes / 4, false, 1 << 20);
  const b = new Float32Array(bytes / 4);
  for (let i = 0; i < 3; i++) k.copy(a, b, a.length, true);
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    k.copy(a, b, a.length, true);
    t.push(performance.now() - t0);
  }
  return bytes / (median(t) / 1e3) / 1e9;
}

const label = (bytes: number) => SIZES.find((s) => s.bytes === bytes)?.label ?? `${bytes}B`;
const gbps = (op: Op, bytes: number, P: number, ms: number) => bytesMoved(op, bytes, P) / (ms / 1e3) / 1e9;
const span = (xs: readonly number[], digits: number) =>
  xs.length > 1 ? `${Math.min(...xs).toFixed(digits)}–${Math.max(...xs).toFixed(digits)}` : xs[0]!.toFixed(digits);

/** What native/ccl sets before ccl::init (setup.cc), for the C++ baseline. */
const CCL_ENV = {
  CCL_ATL_TRANSPORT: process.env.CCL_ATL_TRANSPORT ?? 'mpi',
  CCL_MPI_LIBRARY_PATH: process.env.CCL_MPI_LIBRARY_PATH ?? '/usr/lib/x86_64-linux-gnu/libmpich.so.12',
};

function cBench(
  bin: string,
  reps: number,
  sizes: number[],
  notes: string[],
  what = 'C MPI baseline',
  env: Record<string, string> = {},
): Timing[] | null {
  const r = spawnSync(MPIEXEC, ['-n', '2', bin, String(reps), ...sizes.map(String)], {
    env: mpiEnv(env),
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (r.status !== 0) {
    notes.push(`${what} failed (exit ${r.status}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
    return null;
  }
  // oneCCL prints its CCL_WARN lines on stdout too: only the JSON lines are results.
  return r.stdout
    .trim()
    .split('\n')
    .filter((l) => l.startsWith('{'))
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

/** The C++ oneCCL baseline, built against the headers and library native/ccl was built with. */
function compileCcl(notes: string[]): string | null {
  const src = join(ROOT, 'scripts', 'bench', 'c', 'comm_bench_ccl.cpp');
  const bin = join(ROOT, 'outputs', 'bench', 'c', 'comm_bench_ccl');
  const build = join(cclAddonDir(), 'build');
  const libdir = join(build, 'oneccl-lib');
  try {
    const root = readFileSync(join(build, 'oneccl-root.txt'), 'utf8').trim();
    mkdirSync(join(ROOT, 'outputs', 'bench', 'c'), { recursive: true });
    const mpich = execFileSync('pkg-config', ['--cflags', '--libs', 'mpich'], { encoding: 'utf8' }).trim().split(/\s+/);
    execFileSync(
      'g++',
      [
        '-O2',
        '-std=c++17',
        src,
        `-I${join(root, 'include')}`,
        `-L${libdir}`,
        '-lccl',
        ...mpich,
        `-Wl,-rpath,${libdir}`,
        '-o',
        bin,
      ],
      { stdio: 'pipe' },
    );
    return bin;
  } catch (e) {
    notes.push(`C++ oneCCL baseline not built (g++ ${src}): ${(e as Error).message.split('\n', 1)[0]}`);
    return null;
  }
}

const find = (times: readonly Timing[] | null | undefined, op: Op, bytes: number, mode?: Timing['mode']) =>
  times?.find((t) => t.op === op && t.bytesPerRank === bytes && (mode === undefined || t.mode === mode));

export async function run(argv: string[]): Promise<void> {
  const opt = (name: string, dflt: number) =>
    argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) || dflt : dflt;
  const reps = opt('--reps', 7);
  const runs = opt('--runs', 5);
  const sizes = SIZES.map((s) => s.bytes);
  const P = 2;
  const self = fileURLToPath(import.meta.url);
  const notes: string[] = [
    `2 ranks; bytes per call with S = bytes per rank: all_gather and reduce_scatter P·S, all_reduce and all_to_all_v S; median of ${reps} reps of a timed loop, slowest rank; ` +
      `each result the median of ${runs} interleaved runs (range over runs in its note); ratios taken within each run, then their median`,
    'threads_*: buffers on SharedArrayBuffer, as the runtime allocates them on that transport (peers read send arrays in place); threads_ab_*: plain ArrayBuffers (staged through the slots)',
    'c_mpi_*: blocking MPI calls (the baseline); c_mpi_nb_*: MPI_I* polled with MPI_Test, as the mpi transport issues them',
    'env: the MPI runs (transport and C baseline) get UCX_MEM_EVENTS=no (toolchain.md: UCX memory hooks crash V8 under MPICH ch4:ucx); nothing else is changed',
    loadNote('at start'),
  ];
  const results: BenchResult[] = [];
  const put = (name: string, value: number, unit: string, target?: number, note?: string) =>
    results.push({ name, value, unit, ...(target !== undefined ? { target } : {}), ...(note ? { note } : {}) });

  const avail = mpiAvailability();
  if (!avail.available) notes.push(`mpi transport unavailable: ${avail.reason}`);
  const cBin = avail.available ? compileC(notes) : null;
  const cclAvail = cclAvailability();
  if (!cclAvail.available) notes.push(`ccl transport unavailable: ${cclAvail.reason.split('\n', 1)[0]}`);
  const cppBin = cclAvail.available ? compileCcl(notes) : null;
  const cclRuns: (Timing[] | null)[] = [];
  const cppRuns: (Timing[] | null)[] = [];
  const mainMemcpyRuns: number[] = [];
  const memcpy64Runs: number[] = [];
  const streamRuns: number[] = [];
  const thRuns: (Timing[] | null)[] = [];
  const thAbRuns: (Timing[] | null)[] = [];
  const mpiRuns: (Timing[] | null)[] = [];
  const cRuns: (Timing[] | null)[] = [];
  const threads = async (shared: boolean, i: number): Promise<Timing[] | null> => {
    const th = await launchThreads<CommBenchArgs, Timing[]>(
      { transport: 'threads', size: P, timeoutMs: 60_000 },
      { module: self },
      { reps, sizes, shared, memcpyRef: true },
    );
    if (!th.outcomes[0]?.ok)
      notes.push(
        `threads run ${i} (${shared ? 'SharedArrayBuffer' : 'ArrayBuffer'}) failed: ${th.diagnosis ?? JSON.stringify(th.outcomes)}`,
      );
    return th.outcomes[0]?.ok ? th.outcomes[0].value : null;
  };
  for (let i = 1; i <= runs; i++) {
    mainMemcpyRuns.push(memcpyGbps(16 << 20));
    memcpy64Runs.push(memcpyGbps(64 << 20, 7));
    const sc = streamCopyGbps(16 << 20);
    if (sc !== null) streamRuns.push(sc);
    console.log(`run ${i}/${runs}: threads transport, 2 worker threads …`);
    thRuns.push(await threads(true, i));
    thAbRuns.push(await threads(false, i));
    if (!avail.available) continue;
    console.log(`run ${i}/${runs}: mpi transport, ${MPIEXEC} -n ${P} …`);
    const res = await spawnMpi<Timing[]>({
      n: P,
      entry: { module: self },
      args: { reps, sizes } satisfies CommBenchArgs,
      world: { timeoutMs: 60_000 },
      jobTimeoutMs: 300_000,
    });
    const o = res.outcomes[0];
    mpiRuns.push(o?.ok ? o.value : null);
    if (!o?.ok) notes.push(`mpi run ${i} failed: ${res.diagnosis ?? res.stderr.slice(-500)}`);
    if (cBin) {
      console.log(`run ${i}/${runs}: C MPI baseline, ${MPIEXEC} -n ${P} …`);
      cRuns.push(cBench(cBin, reps, sizes, notes));
    }
    if (!cclAvail.available) continue;
    console.log(`run ${i}/${runs}: ccl transport, ${MPIEXEC} -n ${P} …`);
    const cr = await spawnMpi<Timing[]>({
      n: P,
      transport: 'ccl',
      entry: { module: self },
      args: { reps, sizes } satisfies CommBenchArgs,
      world: { timeoutMs: 120_000 },
      jobTimeoutMs: 600_000,
    });
    cclRuns.push(cr.outcomes[0]?.ok ? cr.outcomes[0].value : null);
    if (!cr.outcomes[0]?.ok) notes.push(`ccl run ${i} failed: ${cr.diagnosis ?? cr.stderr.slice(-500)}`);
    if (cppBin) {
      console.log(`run ${i}/${runs}: C++ oneCCL baseline, ${MPIEXEC} -n ${P} …`);
      cppRuns.push(cBench(cppBin, reps, sizes, notes, 'C++ oneCCL baseline', CCL_ENV));
    }
  }
  notes.push(loadNote('at end'));
  // The reference of threads_allgather_vs_memcpy: rank 0's memcpy samples between the timed repetitions of the
  // all_gather (SharedArrayBuffer runs); the main thread's, taken before each run, where those are missing.
  const memcpyRuns = thRuns.map((r, i) => find(r, 'allgather', 16 << 20)?.memcpyGbps ?? mainMemcpyRuns[i]!);
  put(
    'memcpy_gbps',
    median(memcpyRuns),
    'GB/s',
    undefined,
    `Float32Array.set, 16 MiB, one thread, warm; timed by rank 0 of the threads runs right before each timed repetition of all_gather 16 MiB; runs ${span(memcpyRuns, 1)}`,
  );
  put(
    'memcpy_main_gbps',
    median(mainMemcpyRuns),
    'GB/s',
    undefined,
    `the same in the main thread before each run; runs ${span(mainMemcpyRuns, 1)}`,
  );
  put(
    'memcpy_64MiB_gbps',
    median(memcpy64Runs),
    'GB/s',
    undefined,
    `Float32Array.set, 64 MiB; runs ${span(memcpy64Runs, 1)}`,
  );
  if (streamRuns.length > 0) {
    put(
      'stream_copy_gbps',
      median(streamRuns),
      'GB/s',
      undefined,
      `the kernels' copy with non-temporal stores (the threads transport's large copies), 16 MiB; runs ${span(streamRuns, 1)}`,
    );
  }
  const thTimes = summarise(thRuns);
  const thAbTimes = summarise(thAbRuns);
  const mpiTimes = summarise(mpiRuns);
  const cAll = summarise(cRuns);
  const cTimes = cAll?.filter((t) => t.mode === 'blocking') ?? null;
  const cNbTimes = cAll?.filter((t) => t.mode === 'nonblocking') ?? null;
  const cclTimes = summarise(cclRuns);
  const cppAll = summarise(cppRuns);
  const cppTimes = cppAll?.filter((t) => t.mode === 'blocking') ?? null;
  const cppNbTimes = cppAll?.filter((t) => t.mode === 'nonblocking') ?? null;

  for (const [prefix, times] of [
    ['threads', thTimes],
    ['threads_ab', thAbTimes],
    ['mpi', mpiTimes],
    ['c_mpi', cTimes],
    ['c_mpi_nb', cNbTimes],
    ['ccl', cclTimes],
    ['cpp_ccl', cppTimes],
    ['cpp_ccl_nb', cppNbTimes],
  ] as const) {
    for (const t of times ?? []) {
      const r = t.runs.map((ms) => gbps(t.op, t.bytesPerRank, P, ms));
      put(
        `${prefix}_${t.op}_${label(t.bytesPerRank)}_gbps`,
        gbps(t.op, t.bytesPerRank, P, t.ms),
        'GB/s',
        undefined,
        `${t.ms.toFixed(3)} ms/call; runs ${span(r, 2)} GB/s`,
      );
    }
  }
  // Ratios within each run (both sides measured back to back), then the median over runs.
  const big = 16 << 20;
  const perRun = (num: (i: number) => number | undefined): number[] => {
    const out: number[] = [];
    for (let i = 0; i < runs; i++) {
      const v = num(i);
      if (v !== undefined && Number.isFinite(v)) out.push(v);
    }
    return out;
  };
  const ratio = (name: string, xs: number[], target: number | undefined, what: string) => {
    if (xs.length > 0) put(name, median(xs), 'fraction', target, `${what}; runs ${span(xs, 3)}`);
  };
  const thAg = (runsOf: (Timing[] | null)[], i: number) => {
    const t = find(runsOf[i], 'allgather', big);
    const ref = t?.memcpyGbps ?? mainMemcpyRuns[i];
    return t && ref ? gbps('allgather', big, P, t.ms) / ref : undefined;
  };
  ratio(
    'threads_allgather_vs_memcpy',
    perRun((i) => thAg(thRuns, i)),
    0.5,
    'all_gather 16 MiB/rank (SharedArrayBuffer buffers), GB/s received per rank over memcpy GB/s timed between its repetitions',
  );
  ratio(
    'threads_ab_allgather_vs_memcpy',
    perRun((i) => thAg(thAbRuns, i)),
    undefined,
    'the same with plain ArrayBuffers',
  );
  for (const op of OPS) {
    const name = op === 'allgather' ? 'mpi_allgather_vs_c' : `mpi_${op}_vs_c`;
    ratio(
      name,
      perRun((i) => {
        const m = find(mpiRuns[i], op, big);
        const c = find(cRuns[i], op, big, 'blocking');
        return m && c ? c.ms / m.ms : undefined;
      }),
      op === 'allgather' ? 0.85 : undefined,
      '16 MiB/rank, C time over transport time',
    );
  }
  ratio(
    'mpi_allgather_vs_c_nb',
    perRun((i) => {
      const m = find(mpiRuns[i], 'allgather', big);
      const c = find(cRuns[i], 'allgather', big, 'nonblocking');
      return m && c ? c.ms / m.ms : undefined;
    }),
    undefined,
    'against MPI_Iallgather + MPI_Test in C: the cost of the binding and the event loop alone',
  );
  for (const op of OPS) {
    for (const bytes of sizes) {
      ratio(
        `ccl_${op}_${label(bytes)}_vs_cpp`,
        perRun((i) => {
          const m = find(cclRuns[i], op, bytes);
          const c = find(cppRuns[i], op, bytes, 'blocking');
          return m && c ? c.ms / m.ms : undefined;
        }),
        undefined,
        `${label(bytes)}/rank, C++ oneCCL time (event.wait) over ccl transport time`,
      );
      ratio(
        `ccl_${op}_${label(bytes)}_vs_cpp_nb`,
        perRun((i) => {
          const m = find(cclRuns[i], op, bytes);
          const c = find(cppRuns[i], op, bytes, 'nonblocking');
          return m && c ? c.ms / m.ms : undefined;
        }),
        undefined,
        `${label(bytes)}/rank, C++ oneCCL polled as the transport polls (test + yield) over ccl transport time: the binding and the event loop alone`,
      );
    }
  }
  ratio(
    'mpi_allgather_1MiB_vs_c',
    perRun((i) => {
      const m = find(mpiRuns[i], 'allgather', 1 << 20);
      const c = find(cRuns[i], 'allgather', 1 << 20, 'blocking');
      return m && c ? c.ms / m.ms : undefined;
    }),
    undefined,
    '1 MiB/rank, C time over transport time',
  );

  const report: BenchReport = {
    bench: 'comm',
    when: new Date().toISOString(),
    machine: machineInfo('n/a (communication bench)', mpiEnv()),
    config: {
      ranks: P,
      reps,
      runs,
      sizes_bytes_per_rank: sizes,
      threads_slot_bytes: DEFAULT_SLOT_BYTES,
      threads_direct_min_bytes: DEFAULT_DIRECT_MIN_BYTES,
      threads_copy_native_min_bytes: COPY_NATIVE_MIN,
      threads_copy_stream_min_bytes: COPY_STREAM_MIN,
      mpi_test_budget_us: Number(process.env.MOE_ACTORS_MPI_TEST_BUDGET_US ?? 1000),
      mpiexec: MPIEXEC,
      c_baseline: existsSync(join(ROOT, 'outputs', 'bench', 'c', 'comm_bench')),
      cpp_ccl_baseline: cppRuns.some((r) => r !== null),
    },
    results,
    notes,
  };
  writeReport(report);
}
