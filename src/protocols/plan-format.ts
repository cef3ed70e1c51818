// The plan in words: plan.txt and the `plan` command's output, and the sentences that explain each decision. The
// planner (planner.ts) decides and returns data; this module only words it, so the text can change without
// touching a decision and a test of a decision does not read prose.

import type { Decision, DispatchReason, GradReduceReason, Plan, PlanWarning, PremulBlocker } from './planner.ts';
import { formatMemoryLine } from './projection-memory.ts';
import { STRATEGIES } from './strategies.ts';

/** Why PREMUL_SUM cannot run, as refusals and reasons say it. */
export function premulBlockerText(b: NonNullable<PremulBlocker>): string {
  return b.kind === 'none'
    ? `${b.backend} has no PREMUL_SUM`
    : `${b.backend} has PREMUL_SUM only within a node and the FSDP group spans nodes`;
}

export function dispatchWhy(r: DispatchReason): string {
  switch (r.kind) {
    case 'dense':
      return 'dense model: no MoE layers';
    case 'ep1':
      return 'ep = 1: every rank holds every expert, nothing to dispatch';
    case 'forced':
      return `forced by [comm] dispatch (${STRATEGIES[r.strategy].summary})`;
    case 'fewest-bytes':
      return (
        `fewest predicted bytes per MoE layer among the strategies ${r.backend} can run ` +
        `(${r.ranked.map((c) => `${c.strategy} ${fmtBytes(c.bytesPerLayer)}`).join(', ')})` +
        (r.ruledOut.length ? `; ruled out: ${r.ruledOut.map((c) => `${c.strategy} (${c.blocker})`).join('; ')}` : '')
      );
  }
}

export function gradReduceWhy(r: GradReduceReason): string {
  switch (r.kind) {
    case 'forced':
      return 'forced by [comm] grad_reduce';
    case 'divide-factor-1':
      return 'gradient_divide_factor = 1: torchtitan divides the loss by the global valid-token count, so FSDP reduces with a plain SUM (no PREMUL_SUM needed on any backend)';
    case 'premul-supported':
      return `${r.backend} supports PREMUL_SUM: each rank's contribution is pre-multiplied by 1/${r.factor} inside the reduction`;
    case 'premul-blocked':
      return `${premulBlockerText(r.blocker)}: reduce with SUM, then divide by ${r.factor} locally (the Aurora report's fix)`;
  }
}

export function warningText(w: PlanWarning): string {
  return `[comm] dispatch = "${w.dispatch}" has no effect with expert_parallel_degree = 1`;
}

/** A decision as one line: "choice — why". */
const decisionLine = <T extends string, R>(d: Decision<T, R>, why: (r: R) => string) =>
  `${d.choice} — ${why(d.reason)}`;

export function fmtBytes(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 2)} ${u[i]}`;
}

/** The plan as the `plan` command prints it. */
export function formatPlan(p: Plan): string {
  const d = p.layout.degrees;
  const lines: string[] = [];
  lines.push(
    `mesh: world ${p.layout.worldSize} = dp_replicate ${d.dp_replicate} × dp_shard ${d.dp_shard} (ep ${d.ep} borrows from dp_shard; efsdp ${p.layout.sizes.efsdp})`,
  );
  lines.push(`backend: ${p.backend}`);
  lines.push(
    `model: ${fmtCount(p.params.total)} parameters (${fmtCount(p.params.active)} active), ${fmtCount(p.flopsPerToken)} FLOPs/token`,
  );
  lines.push('');
  lines.push(`EP dispatch: ${decisionLine(p.dispatch, dispatchWhy)}`);
  for (const c of p.candidates)
    lines.push(
      `  ${c.strategy.padEnd(17)} ${c.blocker ? `cannot run: ${c.blocker}` : `${fmtBytes(c.bytesPerLayer)} per MoE layer per microbatch (fwd + bwd, sent + received)`}`,
    );
  lines.push(`gradient reduction: ${decisionLine(p.gradReduce, gradReduceWhy)}`);
  lines.push('');
  lines.push('per rank memory (bytes):');
  const m = p.memory;
  lines.push(`  ${formatMemoryLine(m)}`);
  lines.push('units:');
  for (const u of p.units)
    lines.push(
      `  ${u.id.padEnd(24)} ${fmtCount(u.numel).padStart(8)} params over ${u.group} (${u.groupSize}) → shard ${fmtCount(u.shard)}${u.reshardAfterForward ? ', reshard after forward' : ''}`,
    );
  const pr = p.precision;
  lines.push(
    `bytes per step per group (this rank, sent + received; params ${pr.param}: all-gathers and EP rows at ${pr.param === 'bfloat16' ? 2 : 4} bytes, gradient reduce_scatters at ${pr.reduce === 'bfloat16' ? 2 : 4}):`,
  );
  for (const [g, b] of Object.entries(p.bytesPerStep)) lines.push(`  ${g.padEnd(22)} ${fmtBytes(b)}`);
  for (const w of p.warnings) lines.push(`warning: ${warningText(w)}`);
  return lines.join('\n');
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}
