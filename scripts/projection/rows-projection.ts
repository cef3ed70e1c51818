// Projects every report row (report-rows.ts) on the aurora-pvc system, and fits the system's one free factor — the
// host cost of an eager op — on one row. Shared by the docs generator and the tests.

import { join } from 'node:path';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { ROOT } from '../../src/train/trainer.ts';
import { planInputOf } from '../../src/train/plan-job.ts';
import { loadSystem } from '../../src/train/system-file.ts';
import { project, type Projection } from '../../src/protocols/projection.ts';
import type { SystemSpec } from '../../src/protocols/system.ts';
import { REPORT_ROWS, type ReportRow } from './report-rows.ts';

/** The row the op overhead is fitted on (its TPS), and the rows it is validated on (all others). */
export const FIT_ROW = 'dsv3_noep_fw';

/**
 * Row assumptions beyond the translated configs. The report gives no AC mode; the configs use op-level SAC
 * (torchtitan's debug TOMLs). For the DeepSeek-V3 tables the report's memory (EP=12 twice no-EP) is reproduced only
 * without AC, so those rows are projected with AC off (docs/projection.md shows both).
 */
export function rowOverrides(r: ReportRow): string[] {
  return r.config.includes('deepseek_v3') ? ['--activation_checkpoint.mode', 'none'] : [];
}

export function projectRow(r: ReportRow, system: SystemSpec, extra: string[] = []): Projection {
  const cfg = loadJobConfig(join(ROOT, r.config), [...r.overrides, ...rowOverrides(r), ...extra]);
  return project(planInputOf(cfg, 12), { system });
}

/** The op overhead (seconds) that makes the fit row's projected TPS equal the report's. */
export function fitOpOverhead(system: SystemSpec): number {
  const r = REPORT_ROWS.find((x) => x.id === FIT_ROW)!;
  const tpsAt = (t: number) => projectRow(r, { ...system, device: { ...system.device, opOverheadS: t } }).tpsPerRank;
  // TPS falls monotonically with the op cost (exposed FSDP comm shrinks as compute grows, but never faster): bisect.
  let lo = 0;
  let hi = 1e-3;
  if (tpsAt(lo) < r.tps) return 0;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (tpsAt(mid) > r.tps) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

export function auroraSystem(): SystemSpec {
  return loadSystem('aurora-pvc');
}
