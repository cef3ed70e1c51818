// `moe-actors project`: before the job, per rank — memory by category as the system's training stack holds it,
// bytes per step per group, time per step, TPS and MFU — for a job config on a system (configs/systems/*.toml).
// The memory is the planner's (plan.txt prints the same line for the same config on the same system).

import pc from 'picocolors';
import { formatProjection, project, projectionJson } from '../protocols/projection.ts';
import type { ComputeDtype } from '../protocols/projection-memory.ts';
import { loadJobConfig } from '../train/job-config.ts';
import { loadSystem } from '../train/system-file.ts';
import { DEFAULT_CONFIG } from '../train/trainer.ts';
import { planInputOf } from '../train/plan-job.ts';
import { CliError, parseRanks, requireFile } from './common.ts';

export interface ProjectCliOptions {
  config?: string;
  system?: string;
  ranks?: string;
  format?: string;
  rmax?: string;
  computeDtype?: string;
  torchCompile?: boolean;
}

const DTYPES: Record<string, ComputeDtype> = {
  bf16: 'bfloat16',
  bfloat16: 'bfloat16',
  fp32: 'float32',
  float32: 'float32',
};

export function parseProjectOptions(o: ProjectCliOptions): {
  format: 'text' | 'json';
  rmax?: number;
  computeDtype?: ComputeDtype;
} {
  const format = o.format ?? 'text';
  if (format !== 'text' && format !== 'json')
    throw new CliError(`--format must be "text" or "json" (got ${JSON.stringify(o.format)})`);
  let rmax: number | undefined;
  if (o.rmax !== undefined) {
    rmax = Number(o.rmax);
    if (!Number.isFinite(rmax) || rmax < 1)
      throw new CliError(
        `--rmax must be a number ≥ 1: the busiest EP rank's rows over the mean (got ${JSON.stringify(o.rmax)})`,
      );
  }
  let computeDtype: ComputeDtype | undefined;
  if (o.computeDtype !== undefined) {
    computeDtype = DTYPES[o.computeDtype];
    if (!computeDtype)
      throw new CliError(`--compute-dtype must be bf16 or fp32 (got ${JSON.stringify(o.computeDtype)})`);
  }
  return { format, rmax, computeDtype };
}

export async function runProject(opts: ProjectCliOptions, overrides: readonly string[]): Promise<void> {
  const parsed = parseProjectOptions(opts);
  if (opts.config !== undefined) requireFile(opts.config, '--config');
  const system = loadSystem(opts.system ?? 'local');
  const ranks = parseRanks(opts.ranks);
  const cfg = loadJobConfig(opts.config ?? DEFAULT_CONFIG, [
    ...overrides,
    ...(ranks !== undefined ? ['--comm.ranks', String(ranks)] : []),
  ]);
  // An mpi job's size comes from mpiexec at run time; a projection takes the config's [comm] ranks (or --ranks).
  const size = ranks ?? cfg.comm.ranks;
  const p = project(planInputOf(cfg, size), {
    system,
    rmax: parsed.rmax,
    computeDtype: parsed.computeDtype,
    torchCompile: opts.torchCompile === true,
  });
  if (parsed.format === 'json') {
    console.log(JSON.stringify({ config: opts.config ?? DEFAULT_CONFIG, ranks: size, ...projectionJson(p) }, null, 2));
    return;
  }
  console.log(
    pc.bold(
      `moe-actors project: ${opts.config ?? 'the embedded debug job (configs/debug_ep4.toml)'}, ${size} rank${size === 1 ? '' : 's'} on ${system.name}`,
    ),
  );
  console.log(formatProjection(p));
}
