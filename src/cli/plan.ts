// `moe-actors plan`: what `train` would decide for a job config, without starting anything — the mesh, what each
// rank holds, the EP dispatch and gradient reduction with the reasons, and the bytes each group moves per step.
// A forced strategy the backend cannot run fails here with the planner's message (PlanError), exit code 1.

import pc from 'picocolors';
import { formatPlan } from '../protocols/plan-format.ts';
import { configPathProblems, configWarnings, loadJobConfig } from '../train/job-config.ts';
import { DEFAULT_CONFIG, planJob } from '../train/trainer.ts';
import { isMpiJobTransport } from '../comm/launch.ts';
import { CliError, mpiJob, parseRanks, requireFile } from './common.ts';

export interface PlanOptions {
  config?: string;
  ranks?: string;
}

export async function runPlan(opts: PlanOptions, overrides: readonly string[]): Promise<void> {
  const path = opts.config ?? DEFAULT_CONFIG;
  if (opts.config !== undefined) requireFile(opts.config, '--config');
  const ranks = parseRanks(opts.ranks);
  const cfg = loadJobConfig(path, [...overrides, ...(ranks !== undefined ? ['--comm.ranks', String(ranks)] : [])]);
  let size: number;
  if (ranks !== undefined) size = ranks;
  else if (!isMpiJobTransport(cfg.comm.transport)) size = cfg.comm.ranks;
  else {
    // Planning an mpi job needs its size; inside mpiexec it is known, outside it has to be given.
    const job = mpiJob();
    if (!job)
      throw new CliError(
        `[comm] transport = "${cfg.comm.transport}": the world size comes from mpiexec; pass --ranks N to plan for N ranks`,
      );
    size = job.size;
  }
  const problems = configPathProblems(cfg);
  if (problems.length) throw new CliError(problems.join('\n'));
  const plan = planJob(cfg, size);
  console.log(
    pc.bold(
      `moe-actors plan: ${opts.config ?? 'the embedded debug job (configs/debug_ep4.toml)'}, ${size} rank${size === 1 ? '' : 's'} on ${cfg.comm.transport}`,
    ),
  );
  console.log(formatPlan(plan));
  for (const w of configWarnings(cfg)) console.log(pc.yellow(`warning: ${w}`));
}
