// report.html: the plots of a run from its metrics.jsonl — loss, grad norm, LR, tokens/s, MFU, memory by category,
// bytes per communication group, data-loading share and checkpoint write time, per step, one line per rank where
// ranks differ. One self-contained file (uPlot, its CSS and the data inline; a Content-Security-Policy forbidding
// every fetch) that opens offline from disk, linked with timeline.html both ways. Written by `train` at the end
// (failed runs too) and by `view`.
//
// A resumed run appends to the same metrics.jsonl; the last record of each (rank, step) wins, so the plots show the
// steps the run's final state went through.

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, join, resolve } from 'node:path';

export interface ReportSeries {
  label: string;
  /** One value per step of ReportChart.steps; null where this series has none. */
  values: (number | null)[];
}

export interface ReportChart {
  id: string;
  title: string;
  unit: string;
  /** Logarithmic y axis (values spanning orders of magnitude). */
  log?: boolean;
  steps: number[];
  series: ReportSeries[];
}

export interface ReportData {
  run: string;
  ranks: number[];
  steps: number[];
  charts: ReportChart[];
  hasTimeline: boolean;
}

type Rec = Record<string, unknown> & { step: number; rank: number };

export const reportPath = (runDir: string) => join(runDir, 'report.html');
const metricsPath = (runDir: string) => join(runDir, 'metrics.jsonl');

/** Last record per (rank, step); torn lines (a killed run) are skipped. */
export function readMetrics(runDir: string): Rec[] {
  const byKey = new Map<string, Rec>();
  for (const line of readFileSync(metricsPath(runDir), 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let r: Rec;
    try {
      r = JSON.parse(line) as Rec;
    } catch {
      continue;
    }
    if (typeof r.step === 'number' && typeof r.rank === 'number') byKey.set(`${r.rank}/${r.step}`, r);
  }
  return [...byKey.values()];
}

/** <run>/checkpoints.jsonl: one line per rank and finished checkpoint (torn lines skipped). */
function readCheckpointTimes(runDir: string): (Record<string, unknown> & { step: number; rank: number })[] {
  const file = join(runDir, 'checkpoints.jsonl');
  if (!existsSync(file)) return [];
  const out: (Record<string, unknown> & { step: number; rank: number })[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    try {
      const r = JSON.parse(line) as Record<string, unknown>;
      if (typeof r.step === 'number' && typeof r.rank === 'number') out.push(r as never);
    } catch {
      /* empty or torn line */
    }
  }
  return out;
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

export function buildReportData(runDir: string): ReportData {
  const recs = readMetrics(runDir);
  const steps = [...new Set(recs.map((r) => r.step))].sort((a, b) => a - b);
  const ranks = [...new Set(recs.map((r) => r.rank))].sort((a, b) => a - b);
  const at = new Map(recs.map((r) => [`${r.rank}/${r.step}`, r]));
  const col = (rank: number, key: string) => steps.map((s) => num(at.get(`${rank}/${s}`)?.[key]));
  const same = (a: (number | null)[], b: (number | null)[]) => a.every((v, i) => v === b[i]);
  /** One series per rank, or one for all when every rank logged the same numbers. */
  const perRank = (key: string, scale = 1): ReportSeries[] => {
    const cols = ranks.map((r) => col(r, key).map((v) => (v === null ? null : v * scale)));
    if (cols.every((c) => same(c, cols[0]!)))
      return [{ label: ranks.length > 1 ? 'all ranks' : `rank ${ranks[0]}`, values: cols[0]! }];
    return cols.map((c, i) => ({ label: `rank ${ranks[i]}`, values: c }));
  };
  const keys = new Set<string>();
  for (const r of recs) for (const k of Object.keys(r)) keys.add(k);
  const r0 = ranks[0] ?? 0;
  const has = (s: ReportSeries[]) => s.some((x) => x.values.some((v) => v !== null));
  const charts: ReportChart[] = [];
  const add = (id: string, title: string, unit: string, series: ReportSeries[], log = false) => {
    if (has(series))
      charts.push({
        id,
        title,
        unit,
        ...(log ? { log } : {}),
        steps,
        series: series.filter((x) => x.values.some((v) => v !== null)),
      });
  };
  add('loss', 'Loss (global average and max over ranks)', 'loss', [
    { label: 'global avg loss', values: col(r0, 'loss_metrics/global_avg_loss') },
    { label: 'global max loss', values: col(r0, 'loss_metrics/global_max_loss') },
  ]);
  add('grad_norm', 'Gradient norm (before clipping)', '', perRank('grad_norm'));
  add('lr', 'Learning rate', '', perRank('lr'));
  add('tps', 'Throughput', 'tokens/s per rank', perRank('throughput(tps)'));
  add('mfu', 'MFU', '% of the measured sgemm peak', perRank('mfu(%)'));
  const cats = [...keys].filter((k) => /^memory\/max_active\/.+\(GiB\)$/.test(k)).sort();
  add('memory', `Memory by category (rank ${r0}, peak per step)`, 'MiB', [
    ...cats.map((k) => ({
      label: k.replace(/^memory\/max_active\//, '').replace('(GiB)', ''),
      values: col(r0, k).map((v) => (v === null ? null : v * 1024)),
    })),
    ...(ranks.length > 1
      ? []
      : [{ label: 'rss', values: col(r0, 'memory/rss(GiB)').map((v) => (v === null ? null : v * 1024)) }]),
  ]);
  if (ranks.length > 1)
    add('memory_ranks', 'Memory per rank (max active)', 'MiB', perRank('memory/max_active(GiB)', 1024));
  const groups = [...keys].filter((k) => /^comm\/.+\(bytes\)$/.test(k)).sort();
  // Groups move from tens of bytes (the loss all_reduce) to megabytes (FSDP): a log axis keeps each visible.
  add(
    'bytes',
    `Communication bytes per group (rank ${r0}, per step)`,
    'bytes, log scale',
    groups
      .map((k) => ({
        label: k.replace(/^comm\//, '').replace('(bytes)', ''),
        values: col(r0, k).map((v) => (v === null || v <= 0 ? null : v)),
      }))
      .filter((s) => s.values.some((v) => v !== null)),
    true,
  );
  add('data_loading', 'Data loading', '% of the step', perRank('time_metrics/data_loading(%)'));
  // checkpoints.jsonl (one line per rank and checkpoint, the last one included) when the run wrote it; else the
  // metrics records, where a checkpoint's times arrive with the next logged step. Plotted at the checkpoint's step.
  const ckptLines = readCheckpointTimes(runDir).filter((c) => c.rank === r0);
  const ckpt = (key: string) => {
    const out: (number | null)[] = steps.map(() => null);
    if (ckptLines.length) {
      for (const c of ckptLines) {
        const i = steps.indexOf(c.step);
        const v = num(c[key.replace('checkpoint/', '')]);
        if (i >= 0 && v !== null) out[i] = v;
      }
      return out;
    }
    for (const s of steps) {
      const r = at.get(`${r0}/${s}`);
      const v = num(r?.[key]);
      const i = steps.indexOf(num(r?.['checkpoint/step']) ?? s);
      if (v !== null && i >= 0) out[i] = v;
    }
    return out;
  };
  add('checkpoint', `Checkpoint write time (rank ${r0}, at the checkpoint's step)`, 'ms', [
    { label: 'blocked (on the training path)', values: ckpt('checkpoint/blocked_ms') },
    { label: 'write to commit', values: ckpt('checkpoint/write_ms') },
  ]);
  return {
    run: basename(resolve(runDir)),
    ranks,
    steps,
    charts,
    hasTimeline: existsSync(join(runDir, 'timeline.html')),
  };
}

const require = createRequire(import.meta.url);
const uplotFile = (name: string) =>
  readFileSync(join(require.resolve('uplot/package.json'), '..', 'dist', name), 'utf8');
const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');
const client = () => readFileSync(new URL('./report-client.js', import.meta.url), 'utf8');

export function renderReportHtml(data: ReportData): string {
  const nav = data.hasTimeline
    ? '<a id="to-timeline" href="timeline.html">timeline</a>'
    : '<span class="hint">no timeline (trace disabled)</span>';
  const boxes = data.charts
    .map(
      (c) =>
        `<section class="chart" id="chart-${c.id}"><h2>${esc(c.title)}${c.unit ? ` <span class="hint">(${esc(c.unit)})</span>` : ''}</h2><div class="plot"></div></section>`,
    )
    .join('\n');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(data.run)} — moe-actors report</title>
<style>${uplotFile('uPlot.min.css')}
body{font:14px system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{display:flex;gap:1.5em;align-items:baseline;padding:.6em 1em;background:#fff;border-bottom:1px solid #ddd;position:sticky;top:0;z-index:1}
h1{font-size:1.1em;margin:0}h2{font-size:1em;margin:.2em 0 .4em}.hint{color:#777;font-weight:normal}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:1em;padding:1em}
.chart{background:#fff;border:1px solid #e3e3e3;border-radius:4px;padding:.5em .8em}
</style>
</head>
<body>
<header><h1>${esc(data.run)}</h1><span class="hint">${data.ranks.length} rank${data.ranks.length === 1 ? '' : 's'} · ${data.steps.length} steps logged</span>${nav}</header>
<main>
${boxes || '<p>metrics.jsonl holds no step yet.</p>'}
</main>
<script id="report-data" type="application/json">${scriptJson(data)}</script>
<script>${uplotFile('uPlot.iife.min.js')}</script>
<script>${client()}</script>
</body>
</html>
`;
}

/** Writes <run>/report.html from <run>/metrics.jsonl; returns its path, or null when the run logged no metrics. */
export function writeReport(runDir: string): string | null {
  if (!existsSync(metricsPath(runDir))) return null;
  const file = reportPath(runDir);
  writeFileSync(file, renderReportHtml(buildReportData(runDir)));
  return file;
}
