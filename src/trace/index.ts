// The trace layer's public surface: what the actors, the trainer and the CLI use.
//   actors/trainer: TraceRecorder (EventSink; one per rank), estimateClockOffset (mpi), LiveView, teeSink
//     (collectives become events through the actors' TraceBridge.commObserver, which knows the rank's position)
//   CLI: viewRun (`moe-actors view`), summarizeRun (`moe-actors summary`), toMermaid/toDot (`moe-actors machines`)
export { TraceRecorder, teeSink, type RecorderOptions, type RecorderMeta } from './recorder.ts';
export { estimateClockOffset, estimateClockOffsets, type ClockOffset } from './clock.ts';
export { loadRun, runPaths, readEventFile, applyClockOffset, type LoadedRun } from './run-dir.ts';
export { buildModel, type TraceModel } from './model.ts';
export { summarize, renderSummary, type RunSummary } from './summary.ts';
export { toChromeTrace, writeChromeTrace, serializeChromeTrace } from './chrome-trace.ts';
export { validateChromeTrace } from './chrome-validate.ts';
export { writeTimeline, timelineHtml } from './timeline.ts';
export { buildReportData, renderReportHtml, writeReport, type ReportData } from './report.ts';
export { failedRunView, type FailedRunView } from './failed-run.ts';
export { LiveView, type LiveViewOptions } from './live-view.ts';
export { toMermaid, toDot, collectEdges } from './statechart.ts';
export { viewRun, summarizeRun, type ViewResult, type SummaryResult } from './view.ts';
