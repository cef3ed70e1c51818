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
 * Row assumptions beyond the translated configs: none. Each config carries what the report's run used (AC mode,
 * batch, the DeepSeek-V3 flavor's fields), taken from the report's own TOMLs (n-getty/torchtitan_xpu, cited in each
 * config); docs/projection.md shows every row under the other AC choice too.
 */
export function rowOverrides(_r: ReportRow): string[] {
  return [];
}

export function projectRow(r: ReportRow, system: SystemSpec, extra: string[] = []): Projection {
  const cfg = loadJobConfig(join(ROOT, r.config), [...r.overrides, ...rowOverrides(r), ...extra]);
  return project(planInputOf(cfg, 12), { system, torchCompile: r.torchCompile ?? false });
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
