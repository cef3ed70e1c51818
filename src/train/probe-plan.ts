// [comm] probe: at the start of a run every rank runs each collective once (src/comm/probe.ts) and the plan is
// made again from the capabilities that worked, narrowed by the profile, instead of the transport's claim. The
// probe makes the ranks agree on what failed, so every rank arrives at the same plan. Default 'auto': on for the
// transports backed by a real library (mpi, ccl), whose holes are what the probe is for; off for inproc and threads.

import type { Communicator } from '../comm/communicator.ts';
import { isMpiJobTransport } from '../comm/launch.ts';
import { formatProbeReport, probe, type ProbeReport } from '../comm/probe.ts';
import { formatPlan } from '../protocols/plan-format.ts';
import type { Plan } from '../protocols/planner.ts';
import type { JobConfig } from './job-config.ts';
import { planJob } from './plan-job.ts';

/** The per-call timeout of the probe: short, a probe that hangs says more than one that waits. */
const PROBE_CALL_MS = 10_000;

export function probeWanted(cfg: JobConfig, transport: string): boolean {
  const p = cfg.comm.probe;
  return p === 'on' || (p === 'auto' && isMpiJobTransport(transport));
}

export interface ProbedPlan {
  plan: Plan;
  report: ProbeReport;
  /**
   * One sentence per choice the probe changed against the plan from the declared capabilities: the holes that
   * made it, then the new choice ("all_to_all_v(equal): wrong result …; dispatch allgather-padded instead of a2a").
   */
  changes: string[];
  /** plan.txt's text: the plan, the changes, then the probe's results. */
  text: string;
}

/** "name: reason" of the failed probes whose name matches, else of every failed probe. */
function holes(report: ProbeReport, match: RegExp): string {
  const failed = report.results.filter((r) => !r.ok);
  const which = failed.some((r) => match.test(r.name)) ? failed.filter((r) => match.test(r.name)) : failed;
  return which.map((r) => `${r.name}: ${(r.reason ?? 'failed').split('\n', 1)[0]}`).join('; ') || 'no probe failed';
}

export async function probeAndPlan(world: Communicator, cfg: JobConfig): Promise<ProbedPlan> {
  const report = await probe(world, { timeoutMs: Math.min(PROBE_CALL_MS, cfg.comm.init_timeout_seconds * 1000) });
  const plan = planJob(cfg, world.size, report.capabilities);
  const declared = planJob(cfg, world.size);
  const changes: string[] = [];
  if (plan.dispatch.choice !== declared.dispatch.choice) {
    changes.push(
      `${holes(report, /^all_to_all/)}; dispatch ${plan.dispatch.choice} instead of ${declared.dispatch.choice}`,
    );
  }
  if (plan.gradReduce.choice !== declared.gradReduce.choice) {
    changes.push(
      `${holes(report, /reduce/)}; gradient reduction ${plan.gradReduce.choice} instead of ${declared.gradReduce.choice}`,
    );
  }
  const changed = changes.length
    ? `\n\nchanged by the start-up probe:\n${changes.map((c) => `  ${c}`).join('\n')}`
    : '';
  return {
    plan,
    report,
    changes,
    text: `${formatPlan(plan)}${changed}\n\n${formatProbeReport(report, world.backend)}\n`,
  };
}
