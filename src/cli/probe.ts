// `moe-actors probe`: run every collective once on a small world of the chosen transport and print, per collective,
// what the transport really did (measured) next to what the capability profile allows, and so what a run with
// that profile can use.
//
// The world runs with the "full" profile so that the transport's own verdict is measured, not assumed; the
// profile's verdict is then the same check every communicator applies before a call (checkCall on the profile's
// capabilities), and the usable set is the transport's measured capabilities narrowed by the profile — exactly
// what the planner works from. This way one world serves both columns, also under mpi, where a process gets one
// world only.

import { fileURLToPath } from 'node:url';
import pc from 'picocolors';
import { checkCall, narrow, profileByName, type Capabilities, type Profile } from '../comm/capabilities.ts';
import type { CollectiveOp, ReduceOp } from '../comm/communicator.ts';
import { requireCcl } from '../comm/ccl/native.ts';
import { isMpiJobTransport, launch, launchFailure, TRANSPORTS, type TransportName } from '../comm/launch.ts';
import type { ProbeResult } from '../comm/probe.ts';
import { CliError, mpiJob, parseRanks } from './common.ts';
import type { ProbeRankArgs, ProbeRankResult } from './probe-rank.ts';

const RANK_PROGRAM = fileURLToPath(new URL('./probe-rank.ts', import.meta.url));
const CALL_TIMEOUT_MS = 2000;

/** The call each probe check makes, as the capability check sees it. */
const CALLS: Record<string, { op: CollectiveOp; reduce?: ReduceOp; equalCounts?: boolean }> = {
  all_gather: { op: 'all_gather' },
  all_gather_v: { op: 'all_gather_v' },
  reduce_scatter: { op: 'reduce_scatter', reduce: { op: 'sum' } },
  all_reduce: { op: 'all_reduce', reduce: { op: 'sum' } },
  'all_reduce(avg)': { op: 'all_reduce', reduce: { op: 'avg' } },
  'all_reduce(max)': { op: 'all_reduce', reduce: { op: 'max' } },
  'all_reduce(premul_sum)': { op: 'all_reduce', reduce: { op: 'premul_sum', factor: 0.5 } },
  'all_to_all_v(equal)': { op: 'all_to_all_v', equalCounts: true },
  'all_to_all_v(uneven)': { op: 'all_to_all_v', equalCounts: false },
  broadcast: { op: 'broadcast' },
  barrier: { op: 'barrier' },
};

export interface ProfileVerdict {
  allowed: boolean;
  reason?: string;
}

export function profileVerdict(profile: Profile, check: string, multiNode: boolean): ProfileVerdict {
  if (check === 'split')
    return profile.caps.split ? { allowed: true } : { allowed: false, reason: 'communicator split is not supported' };
  const call = CALLS[check];
  if (!call)
    return {
      allowed: false,
      reason: `moe-actors probe does not know the call "${check}" makes (src/cli/probe.ts CALLS)`,
    };
  const c = checkCall(profile.caps, call.op, call.reduce, { equalCounts: call.equalCounts, multiNode });
  return c.ok ? { allowed: true } : { allowed: false, reason: `${c.reason}; instead: ${c.alternative}` };
}

function describeCaps(c: Capabilities): string {
  const missing: string[] = [];
  const partial: string[] = [];
  for (const [k, v] of Object.entries(c)) {
    if (v === false || v === 'no') missing.push(k);
    else if (v !== true && v !== 'yes') partial.push(`${k} ${v}`);
  }
  return [
    missing.length ? `missing ${missing.join(', ')}` : 'nothing missing',
    ...(partial.length ? [`partial: ${partial.join(', ')}`] : []),
  ].join('; ');
}

export function formatProbe(
  r: ProbeRankResult,
  profile: Profile,
  transport: string,
  size: number,
): { text: string; transportFailures: ProbeResult[] } {
  const lines: string[] = [];
  lines.push(
    pc.bold(
      `probe: ${size} rank${size === 1 ? '' : 's'} on ${transport}${r.multiNode ? ' (several nodes)' : ''}, profile ${profile.name} — ${profile.description}`,
    ),
  );
  const w = Math.max(...r.report.results.map((x) => x.name.length), 'collective'.length);
  const col = (s: string, n: number) => s.padEnd(n);
  lines.push(
    `${col('collective', w)}  ${col(`transport ${transport}`, 22)}${col(`profile ${profile.name}`, 20)}usable`,
  );
  const transportFailures: ProbeResult[] = [];
  const notes: string[] = [];
  for (const x of r.report.results) {
    const pv = profileVerdict(profile, x.name, r.multiNode);
    const t = x.ok ? pc.green(col(`ok ${x.ms.toFixed(1)} ms`, 22)) : pc.red(col('FAILED', 22));
    const p = pv.allowed ? col('allows', 20) : pc.yellow(col('refuses', 20));
    const usable = x.ok && pv.allowed;
    lines.push(`${col(x.name, w)}  ${t}${p}${usable ? pc.green('yes') : pc.red('no')}`);
    if (!x.ok) {
      transportFailures.push(x);
      notes.push(`  ${x.name}: transport: ${x.reason ?? 'failed'}`);
    }
    if (!pv.allowed) notes.push(`  ${x.name}: profile ${profile.name}: ${pv.reason}`);
  }
  if (notes.length) lines.push('why not:', ...notes);
  lines.push(`transport capabilities (measured): ${describeCaps(r.report.capabilities)}`);
  lines.push(
    `with profile ${profile.name} (what the planner uses): ${describeCaps(narrow(r.report.capabilities, profile.caps))}`,
  );
  return { text: lines.join('\n'), transportFailures };
}

export async function runProbe(opts: { transport: string; ranks: string; profile: string }): Promise<void> {
  if (!TRANSPORTS.includes(opts.transport as TransportName))
    throw new CliError(`--transport ${opts.transport}: unknown transport; use one of ${TRANSPORTS.join(', ')}`);
  const transport = opts.transport as TransportName;
  const profile = profileByName(opts.profile);
  let size = parseRanks(opts.ranks)!;
  let writer = true;
  if (isMpiJobTransport(transport)) {
    const job = mpiJob();
    if (!job)
      throw new CliError(
        `--transport ${transport} runs inside an MPI job: mpiexec.mpich -n N node bin/moe-actors.mjs probe --transport ${transport} (no MPI job found: PMI_SIZE is unset)`,
      );
    if (transport === 'ccl') requireCcl();
    size = job.size;
    writer = job.rank === 0;
  }
  const r = await launch<ProbeRankArgs, ProbeRankResult>(
    { transport, size, profile: 'full', timeoutMs: 4 * CALL_TIMEOUT_MS },
    { module: RANK_PROGRAM },
    { timeoutMs: CALL_TIMEOUT_MS },
  );
  const failure = launchFailure('probe', r);
  if (failure) throw new Error(failure);
  if (!writer) return;
  const reports = r.outcomes.map((o) => (o as { value: ProbeRankResult }).value).sort((a, b) => a.rank - b.rank);
  const { text, transportFailures } = formatProbe(reports[0]!, profile, transport, size);
  console.log(text);
  // probe() makes every rank agree on what failed; a difference here would be a bug in that agreement.
  const differ = reports
    .filter((x) => JSON.stringify(x.report.capabilities) !== JSON.stringify(reports[0]!.report.capabilities))
    .map((x) => x.rank);
  if (differ.length)
    console.log(pc.yellow(`warning: ranks ${differ.join(', ')} measured different capabilities than rank 0`));
  if (transportFailures.length) {
    throw new CliError(
      `${transportFailures.length} collective(s) failed on the ${transport} transport itself (${transportFailures.map((x) => x.name).join(', ')}); see "why not" above`,
    );
  }
}
