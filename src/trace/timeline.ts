// timeline.html: one self-contained file (inline data, style and script; a Content-Security-Policy that forbids
// every fetch) that opens offline from disk. The page itself is timeline/client.js; this module assembles it.

import { readFileSync, writeFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { FlightDump } from '../comm/flight-recorder.ts';
import type { StateCategory } from '../protocols/events.ts';
import { failedRunView, type FailedRunView } from './failed-run.ts';
import { buildModel, type TraceModel } from './model.ts';
import { loadRun, runPaths } from './run-dir.ts';
import { CATEGORIES, summarize } from './summary.ts';
import { buildTimelineData, type TimelineData } from './timeline-data.ts';

/** Category colours: comm states in blues/purple, compute green, step phases pale, waiting red. */
export const CATEGORY_COLORS: Record<StateCategory, string> = {
  dispatch: '#4e79a7',
  compute: '#59a14f',
  combine: '#76b7b2',
  forward: '#d6e4f0',
  recompute: '#f6e7a8',
  backward: '#f5d0b5',
  reduce: '#b07aa1',
  optimizer: '#f28e2b',
  waiting: '#e15759',
  other: '#bab0ac',
};

const asset = (name: string) => readFileSync(new URL(`./timeline/${name}`, import.meta.url), 'utf8');

/** JSON that cannot end the <script> element it sits in. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

function failedPanel(f: FailedRunView): string {
  const items = f.ranks
    .map(
      (r) =>
        `<li class="${r.status}" data-rank="${r.rank}" data-status="${r.status}"><span class="pill">${esc(r.status)}</span>` +
        `<span>rank ${r.rank}: ${esc(r.where)}${r.reason ? ` <span class="hint">(${esc(r.reason)})</span>` : ''}</span></li>`,
    )
    .join('');
  const src = f.source === 'flight-dumps' ? 'from the flight-recorder dumps' : 'from the trace (no flight dumps found)';
  return `<section id="failed"><h2>Failed run: who waited for whom <span class="hint">(${src})</span></h2><ul>${items}</ul><pre>${esc(f.text)}</pre></section>`;
}

export function renderTimelineHtml(data: TimelineData): string {
  const legend = CATEGORIES.map((c) => `<span><i style="background:${CATEGORY_COLORS[c]}"></i>${c}</span>`).join('');
  const nSlices = data.s.start.length;
  const nColl = data.c.start.length;
  const ranks = new Set(data.rows.map((r) => r.rank)).size;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(data.run)} — moe-actors timeline</title>
<style>${asset('style.css')}</style>
</head>
<body>
<header>
<h1>${esc(data.run)}</h1>
<span class="meta">${ranks} ranks · ${data.summary.steps} steps · ${nSlices} states · ${nColl} collectives · ${data.durationMs.toFixed(1)} ms</span>
<label>Layer <select id="layer"><option value="all">all layers</option></select></label>
<div class="legend">${legend}<span><i style="background:#37474f"></i>collective in flight</span><span><i style="background:#c62828"></i>failed</span></div>
<span class="hint">wheel: zoom · drag: pan · double-click: reset · hover: details</span>
<a id="to-report" href="report.html">plots (report.html)</a>
</header>
${data.failed ? failedPanel(data.failed) : ''}
<div id="view"><canvas id="canvas"></canvas></div>
<div id="tip" hidden></div>
<section class="summary">
<h2 id="summary-title"></h2>
<p>Category columns split each rank's time by its dominant state. compute / comm / overlap / idle follow HTA: comm = collectives in flight, overlap = share of comm hidden behind compute, idle = neither, within the rank's window (for a layer: the time the rank spent in it).</p>
<table id="summary-table"></table>
</section>
<script id="timeline-data" type="application/json">${scriptJson(data)}</script>
<script id="timeline-colors" type="application/json">${scriptJson(CATEGORY_COLORS)}</script>
<script>${asset('client.js')}</script>
</body>
</html>
`;
}

export interface TimelineInput {
  model: TraceModel;
  dumps: FlightDump[];
  run: string;
}

export function timelineHtml(input: TimelineInput): string {
  const failed = failedRunView(input.model, input.dumps);
  return renderTimelineHtml(buildTimelineData(input.model, summarize(input.model), failed, input.run));
}

/** Reads outputs/<run>, writes outputs/<run>/timeline.html, returns its path. */
export function writeTimeline(runDir: string, input?: TimelineInput): string {
  let inp = input;
  if (!inp) {
    const loaded = loadRun(runDir);
    inp = { model: buildModel(loaded.events), dumps: loaded.dumps, run: basename(resolve(runDir)) };
  }
  const file = runPaths(runDir).timeline;
  writeFileSync(file, timelineHtml(inp));
  return file;
}
