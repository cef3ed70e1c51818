// bench:seed's projection of a row with `--system local` (configs/systems/local.toml), the rates replaced by the
// sgemm peak measured in the same run: memory per rank, logical bytes per step over the groups with more than one
// member (as bench:seed measures them: the byte model's plus the step's scalar collectives) and TPS per rank.
import type { MeshDim } from '../../src/comm/mesh-layout.ts';
import { project } from '../../src/protocols/projection.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import type { RunSummary } from './seed-summary.ts';

export interface LocalProjection {
  memory: number;
  bytes: number;
  tps: number;
  mfu: number;
}

export function projectLocal(config: string, overrides: string[], ranks: number, nodeFlops: number): LocalProjection {
  const base = loadSystem('local');
  const rate = { bfloat16: nodeFlops, float32: nodeFlops };
  const system = { ...base, device: { ...base.device, peakFlops: rate, matmulFlops: rate, attentionFlops: rate } };
  const p = project(planInputOf(loadJobConfig(config, overrides), ranks), { system });
  const sizes = p.plan.layout.sizes;
  const bytes =
    Object.entries(p.plan.bytesPerStep)
      .filter(([g]) => (sizes[g.replace(/_reduce$/, '') as MeshDim] ?? 1) > 1)
      .reduce((a, [, v]) => a + v, 0) + Object.values(p.scalarBytes).reduce((a, v) => a + v, 0);
  return { memory: p.plan.memory.total, bytes, tps: p.tpsPerRank, mfu: p.mfu };
}

export const PROJ_HEAD = [
  '| row | memory measured | memory projected | ratio | bytes/step measured | bytes/step projected | ratio | TPS measured | TPS projected | ratio |',
  '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
];

const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

export function projRow(label: string, s: RunSummary, p: LocalProjection): string {
  return (
    `| ${label} | ${mib(s.memoryPerRankBytes)} | ${mib(p.memory)} | ${(p.memory / s.memoryPerRankBytes).toFixed(3)} | ` +
    `${mib(s.commBytesPerStep)} | ${mib(p.bytes)} | ${(p.bytes / s.commBytesPerStep).toFixed(4)} | ` +
    `${s.tps.toFixed(0)} | ${p.tps.toFixed(0)} | ${(p.tps / s.tps).toFixed(3)} |`
  );
}
