// `moe-actors ep-ops`: the collectives of every EP dispatch strategy, forward and backward, run on a world of the
// chosen transport with synthetic routing, each rank checking its tokens' routed output and input gradient against
// a local reference (ep-ops-rank.ts). Per strategy: ok / FAILED with the largest error, the median time of a
// forward + backward, bytes and calls per rep — or why the capabilities (transport ∩ profile) cannot run it.
// Exits 1 when a strategy gave wrong numbers on any rank.

import { fileURLToPath } from 'node:url';
import pc from 'picocolors';
import { requireCcl } from '../comm/ccl/native.ts';
import { isMpiJobTransport, launch, launchFailure, TRANSPORTS, type TransportName } from '../comm/launch.ts';
import { profileByName } from '../comm/capabilities.ts';
import { DISPATCH_STRATEGIES, type DispatchStrategy } from '../protocols/strategies.ts';
import { CliError, mpiJob, parseRanks } from './common.ts';
import type { EpOpsArgs, EpOpsRankResult } from './ep-ops-rank.ts';

const RANK_PROGRAM = fileURLToPath(new URL('./ep-ops-rank.ts', import.meta.url));
/** |got − reference| above this is a wrong result (errors of a wrong layout are O(1); float32 sums ≈ 1e-6). */
const TOLERANCE = 1e-3;

export interface EpOpsOptions {
  transport: string;
  ranks: string;
  profile: string;
  tokens: string;
  dim: string;
  experts: string;
  topk: string;
  reps: string;
  strategy?: string;
  timeout: string;
}

function positive(v: string, option: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new CliError(`${option} must be a positive integer (got ${JSON.stringify(v)})`);
  return n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const kib = (b: number) => (b >= 1 << 20 ? `${(b / (1 << 20)).toFixed(2)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

export function formatEpOps(rs: EpOpsRankResult[], transport: string): { text: string; wrong: string[] } {
  const r0 = rs[0]!;
  const lines = [pc.bold(`ep-ops: ${r0.size} rank${r0.size === 1 ? '' : 's'} on ${transport} (${r0.backend}), the world as the EP group`)];
  const wrong: string[] = [];
  for (const [i, s] of r0.results.entries()) {
    const name = s.strategy.padEnd(17);
    if (s.blocker) {
      lines.push(`${name} ${pc.yellow('cannot run')}: ${s.blocker}`);
      continue;
    }
    const worst = Math.max(...rs.map((r) => r.results[i]!.maxErr));
    const bad = rs.filter((r) => !(r.results[i]!.maxErr <= TOLERANCE)).map((r) => r.rank);
    const ms = median(rs.map((r) => median(r.results[i]!.ms)));
    const verdict = bad.length ? pc.red(`FAILED on rank${bad.length > 1 ? 's' : ''} ${bad.join(', ')}`) : pc.green('ok');
    if (bad.length) wrong.push(s.strategy);
    lines.push(`${name} ${verdict}  max err ${worst.toExponential(1)}  ${ms.toFixed(2)} ms fwd+bwd (median)  ${kib(s.bytes)} and ${s.calls} calls per rep on rank 0`);
  }
  return { text: lines.join('\n'), wrong };
}

export async function runEpOps(o: EpOpsOptions): Promise<void> {
  if (!TRANSPORTS.includes(o.transport as TransportName)) throw new CliError(`--transport ${o.transport}: unknown transport; use one of ${TRANSPORTS.join(', ')}`);
  const transport = o.transport as TransportName;
  profileByName(o.profile);
  const strategies = o.strategy === undefined ? undefined : [o.strategy as DispatchStrategy];
  if (strategies && !DISPATCH_STRATEGIES.includes(strategies[0]!)) throw new CliError(`--strategy ${o.strategy}: unknown; use one of ${DISPATCH_STRATEGIES.join(', ')}`);
  let size = parseRanks(o.ranks)!;
  let writer = true;
  if (isMpiJobTransport(transport)) {
    const job = mpiJob();
    if (!job) throw new CliError(`--transport ${transport} runs inside an MPI job: mpiexec.mpich -n N node bin/moe-actors.mjs ep-ops --transport ${transport} (no MPI job found: PMI_SIZE is unset)`);
    if (transport === 'ccl') requireCcl();
    size = job.size;
    writer = job.rank === 0;
  }
  const args: EpOpsArgs = {
    tokens: positive(o.tokens, '--tokens'),
    dim: positive(o.dim, '--dim'),
    experts: positive(o.experts, '--experts'),
    topk: positive(o.topk, '--topk'),
    reps: positive(o.reps, '--reps'),
    seed: 1,
    strategies,
  };
  if (args.topk > args.experts) throw new CliError(`--topk ${args.topk} exceeds --experts ${args.experts}`);
  if (args.experts % size !== 0) throw new CliError(`--experts ${args.experts} must be a multiple of the ${size} ranks (each rank holds experts/ranks of them)`);
  const r = await launch<EpOpsArgs, EpOpsRankResult>(
    { transport, size, profile: o.profile as never, timeoutMs: positive(o.timeout, '--timeout') },
    { module: RANK_PROGRAM },
    args,
  );
  const failure = launchFailure('ep-ops', r);
  if (failure) throw new Error(failure);
  // Under mpi/ccl each process has its own outcome only; every rank checks itself and reports a wrong result by
  // failing, so rank 0 prints the table of what it saw.
  const rs = r.outcomes.map((x) => (x as { value: EpOpsRankResult }).value).sort((a, b) => a.rank - b.rank);
  const { text, wrong } = formatEpOps(rs, transport);
  if (writer) console.log(text);
  if (wrong.length) throw new CliError(`${wrong.join(', ')} gave wrong results (see above)`);
}
