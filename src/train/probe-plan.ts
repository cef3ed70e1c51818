// [comm] probe: at the start of a run every rank runs each collective once (src/comm/probe.ts) and the plan is
// made again from the capabilities that worked, narrowed by the profile, instead of the transport's claim. The
// probe makes the ranks agree on what failed, so every rank arrives at the same plan. Default 'auto': on for the
// transports backed by a real library (mpi, ccl), whose holes are what the probe is for; off for inproc and threads.

import type { Communicator } from '../comm/communicator.ts';
import { isMpiJobTransport } from '../comm/launch.ts';
import { formatProbeReport, probe, type ProbeReport } from '../comm/probe.ts';
import { formatPlan, type Plan } from '../protocols/planner.ts';
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
  /** plan.txt's text: the plan, then the probe's results. */
  text: string;
}

export async function probeAndPlan(world: Communicator, cfg: JobConfig): Promise<ProbedPlan> {
  const report = await probe(world, { timeoutMs: Math.min(PROBE_CALL_MS, cfg.comm.init_timeout_seconds * 1000) });
  const plan = planJob(cfg, world.size, report.capabilities);
  return { plan, report, text: `${formatPlan(plan)}\n\n${formatProbeReport(report, world.backend)}\n` };
}
