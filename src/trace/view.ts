// What the CLI calls: `moe-actors view outputs/<run>` → viewRun, `moe-actors summary outputs/<run>` →
// summarizeRun. One load and one model per call; every artefact is derived from the same model.

import { basename, resolve } from 'node:path';
import { writeChromeTrace } from './chrome-trace.ts';
import { validateChromeTrace } from './chrome-validate.ts';
import { failedRunView } from './failed-run.ts';
import { buildModel } from './model.ts';
import { loadRun, runPaths } from './run-dir.ts';
import { renderSummary, summarize, type LayerKey, type RunSummary } from './summary.ts';
import { writeTimeline } from './timeline.ts';
import { writeReport } from './report.ts';
import { readFileSync } from 'node:fs';

export interface ViewResult {
  trace: string;
  timeline: string;
  /** report.html (plots of metrics.jsonl), or null when the run has no metrics. */
  report: string | null;
  events: number;
  /** Problems a viewer would report (empty when trace.json is clean). */
  traceErrors: string[];
  warnings: string[];
  /** The failed-run diagnosis, when the run failed. */
  failure: string | null;
}

/** Writes trace.json, timeline.html and report.html into the run folder. */
export function viewRun(runDir: string, opts: { validate?: boolean } = {}): ViewResult {
  const loaded = loadRun(runDir);
  const model = buildModel(loaded.events);
  const run = basename(resolve(runDir));
  const trace = writeChromeTrace(runDir, model, { run });
  const timeline = writeTimeline(runDir, { model, dumps: loaded.dumps, run });
  const report = writeReport(runDir);
  const traceErrors =
    opts.validate === false ? [] : validateChromeTrace(JSON.parse(readFileSync(trace, 'utf8'))).errors;
  const failed = failedRunView(model, loaded.dumps);
  return {
    trace,
    timeline,
    report,
    events: loaded.events.length,
    traceErrors,
    warnings: [...loaded.warnings, ...model.warnings],
    failure: failed ? failed.text : null,
  };
}

export interface SummaryResult {
  summary: RunSummary;
  text: string;
}

/** The per-layer / per-state table of a run, as data and as terminal text. */
export function summarizeRun(runDir: string, opts: { layers?: LayerKey[]; color?: boolean } = {}): SummaryResult {
  const model = buildModel(loadRun(runDir).events);
  const summary = summarize(model);
  return { summary, text: renderSummary(summary, { layers: opts.layers, color: opts.color }) };
}

export { runPaths };
