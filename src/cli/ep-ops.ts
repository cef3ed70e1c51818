// `moe-actors ep-ops` (the Aurora report's test_xpu_ep_ops as a command): every EP dispatch strategy's dispatch →
// expert compute → combine, forward and backward, on a world of the chosen transport, checked on every rank against
// the single-rank computation of the same tokens (ep-ops-rank.ts: uneven top-k routing, a rank that receives no
// rows, real SwiGLU experts and a shared expert). Prints strategy × check × max error × ms, or why the
// capabilities (transport ∩ profile) cannot run a strategy; exits 1 when a check failed on any rank.

import { fileURLToPath } from 'node:url';
import pc from 'picocolors';
import { requireCcl } from '../comm/ccl/native.ts';
import { isMpiJobTransport, launch, launchFailure, TRANSPORTS, type TransportName } from '../comm/launch.ts';
import { profileByName } from '../comm/capabilities.ts';
import { DISPATCH_STRATEGIES, type DispatchStrategy } from '../protocols/strategies.ts';
import { CliError, mpiJob, parseRanks } from './common.ts';
import { CHECKS, type EpOpsArgs, type EpOpsRankResult } from './ep-ops-rank.ts';

const RANK_PROGRAM = fileURLToPath(new URL('./ep-ops-rank.ts', import.meta.url));
/**
 * Largest |got − single rank| relative to the largest |single rank| of a check that still counts as right: the
 * strategies sum the same float32 terms in other orders (reduce_scatter, BLAS vs the TypeScript kernels), ≈ 1e-7;
 * a misplaced, dropped or doubled row is O(1).
 */
export const TOLERANCE = 1e-5;

export interface EpOpsOptions {
  transport: string;
  ranks: string;
  profile: string;
  tokens: string;
  dim: string;
  hidden: string;
  sharedHidden: string;
  experts: string;
  topk: string;
  reps: string;
  strategy?: string;
  timeout: string;
}

function positive(v: string, option: string, min = 1): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min)
    throw new CliError(`${option} must be ${min ? 'a positive' : 'a non-negative'} integer (got ${JSON.stringify(v)})`);
  return n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const kib = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

export function formatEpOps(
  r0: EpOpsRankResult,
  transport: string,
  args?: Pick<EpOpsArgs, 'tokens' | 'topk' | 'experts' | 'sharedHidden'>,
): { text: string; wrong: string[] } {
  const lines = [
    pc.bold(
      `ep-ops: ${r0.size} rank${r0.size === 1 ? '' : 's'} on ${transport} (${r0.backend}), the world as the EP group`,
    ),
  ];
  if (args) {
    const empty = r0.rowsPerRank.flatMap((n, i) => (n === 0 ? [i] : []));
    lines.push(
      `routing: ${args.tokens} tokens per rank, top-${args.topk} of ${args.experts} experts, ` +
        `${args.sharedHidden ? `a shared expert (hidden ${args.sharedHidden})` : 'no shared expert'}; rows each rank's experts receive: ` +
        `${r0.rowsPerRank.join(', ')}${empty.length ? ` (rank ${empty.join(', ')} none)` : ''}`,
    );
  }
  lines.push(
    pc.dim(
      `${'strategy'.padEnd(17)} ${'check'.padEnd(30)} ${'result'.padEnd(20)} ${'max err'.padEnd(9)} ms (median, all ranks)`,
    ),
  );
  const wrong: string[] = [];
  for (const s of r0.results) {
    const name = s.strategy.padEnd(17);
    if (s.blocker) {
      lines.push(`${name} ${'all'.padEnd(30)} ${pc.yellow('cannot run')}: ${s.blocker}`);
      continue;
    }
    for (const check of CHECKS) {
      const errs = s.errors[check];
      if (!errs) continue;
      const worst = Math.max(...errs);
      const bad = errs.flatMap((e, rank) => (e <= TOLERANCE ? [] : [rank]));
      if (bad.length && !wrong.includes(s.strategy)) wrong.push(s.strategy);
      const verdict = bad.length ? `FAILED on rank${bad.length > 1 ? 's' : ''} ${bad.join(',')}` : 'ok';
      const ms = check.startsWith('forward')
        ? median(s.fwdMs).toFixed(2)
        : check.endsWith('shared expert grads')
          ? '—'
          : median(s.bwdMs).toFixed(2);
      lines.push(
        `${name} ${check.padEnd(30)} ${(bad.length ? pc.red : pc.green)(verdict.padEnd(20))} ${worst.toExponential(1).padEnd(9)} ${ms}`,
      );
    }
    lines.push(pc.dim(`${name} ${kib(s.bytes)} and ${s.calls} collective calls per forward + backward on rank 0`));
  }
  lines.push(
    pc.dim(
      `max err: largest |distributed − single rank| / largest |single rank| over each rank's slice; ok ≤ ${TOLERANCE}`,
    ),
  );
  return { text: lines.join('\n'), wrong };
}

export async function runEpOps(o: EpOpsOptions): Promise<void> {
  if (!TRANSPORTS.includes(o.transport as TransportName))
    throw new CliError(`--transport ${o.transport}: unknown transport; use one of ${TRANSPORTS.join(', ')}`);
  const transport = o.transport as TransportName;
  profileByName(o.profile);
  const strategies = o.strategy === undefined || o.strategy === 'all' ? undefined : [o.strategy as DispatchStrategy];
  if (strategies && !DISPATCH_STRATEGIES.includes(strategies[0]!))
    throw new CliError(`--strategy ${o.strategy}: unknown; use one of ${DISPATCH_STRATEGIES.join(', ')} or all`);
  let size = parseRanks(o.ranks)!;
  let writer = true;
  if (isMpiJobTransport(transport)) {
    const job = mpiJob();
    if (!job)
      throw new CliError(
        `--transport ${transport} runs inside an MPI job: mpiexec.mpich -n N node bin/moe-actors.mjs ep-ops --transport ${transport} (no MPI job found: PMI_SIZE is unset)`,
      );
    if (transport === 'ccl') requireCcl();
    size = job.size;
    writer = job.rank === 0;
  }
  const args: EpOpsArgs = {
    tokens: positive(o.tokens, '--tokens'),
    dim: positive(o.dim, '--dim'),
    hidden: positive(o.hidden, '--hidden'),
    sharedHidden: positive(o.sharedHidden, '--shared-hidden', 0),
    experts: positive(o.experts, '--experts'),
    topk: positive(o.topk, '--topk'),
    reps: positive(o.reps, '--reps'),
    seed: 1,
    strategies,
  };
  if (args.topk > args.experts) throw new CliError(`--topk ${args.topk} exceeds --experts ${args.experts}`);
  if (args.experts % size !== 0)
    throw new CliError(
      `--experts ${args.experts} must be a multiple of the ${size} ranks (each rank holds experts/ranks of them)`,
    );
  const r = await launch<EpOpsArgs, EpOpsRankResult>(
    { transport, size, profile: o.profile as never, timeoutMs: positive(o.timeout, '--timeout') },
    { module: RANK_PROGRAM },
    args,
  );
  const failure = launchFailure('ep-ops', r);
  if (failure) throw new Error(failure);
  // Every rank's result holds the whole world's errors and times (gathered); under mpi/ccl a process has its own.
  const r0 = (r.outcomes[0] as { value: EpOpsRankResult }).value;
  const { text, wrong } = formatEpOps(r0, transport, args);
  if (writer) console.log(text);
  if (wrong.length) throw new CliError(`${wrong.join(', ')} gave wrong results (see above)`);
}
