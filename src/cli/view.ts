// `moe-actors view outputs/<run>` writes trace.json (Perfetto / chrome://tracing) and timeline.html (offline) from
// the run's per-rank event files; `moe-actors summary outputs/<run>` prints the per-layer, per-state time table.

import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import pc from 'picocolors';
import { runPaths, summarizeRun, viewRun } from '../trace/view.ts';
import { CliError } from './common.ts';

/** The folder must be a run folder with events; say what is missing and how a run gets them. */
function checkRunDir(run: string): void {
  if (!existsSync(run))
    throw new CliError(`${run}: no such folder; pass a run folder such as outputs/<run> (train writes one per run)`);
  if (!statSync(run).isDirectory()) throw new CliError(`${run}: not a folder; pass a run folder such as outputs/<run>`);
  const events = runPaths(run).events;
  if (!existsSync(events)) {
    throw new CliError(
      `${run}: no events/ folder, so nothing to show; it is written by \`moe-actors train\` with [trace] enable = true (the default)`,
    );
  }
  const files = readdirSync(events).filter((n) => n.endsWith('.jsonl'));
  if (!files.some((n) => hasEvent(join(events, n)))) {
    throw new CliError(
      `${events}: ${files.length ? `${files.length} event file(s) but no recorded events in them` : 'no per-rank event files (rank-<r>.jsonl)'}; ` +
        'the run stopped before its first step, or ran with [trace] enable = false',
    );
  }
}

/** Whether the file holds an event line within its first 64 KiB (ranks write a meta line, then events). */
function hasEvent(file: string): boolean {
  const fd = openSync(file, 'r');
  try {
    const buf = Buffer.alloc(64 * 1024);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return /"kind"\s*:\s*"(state|collective|counter)"/.test(buf.subarray(0, n).toString('utf8'));
  } finally {
    closeSync(fd);
  }
}

export async function runView(run: string): Promise<void> {
  checkRunDir(run);
  const v = viewRun(run);
  console.log(`${v.events} events`);
  console.log(`timeline: ${v.timeline}`);
  if (v.report) console.log(`plots: ${v.report}`);
  console.log(`trace (Perfetto, chrome://tracing): ${v.trace}`);
  for (const w of v.warnings) console.log(pc.yellow(`warning: ${w}`));
  for (const e of v.traceErrors) console.log(pc.yellow(`trace.json: ${e}`));
  if (v.failure) console.log(pc.red(v.failure));
}

export async function runSummary(run: string): Promise<void> {
  checkRunDir(run);
  console.log(summarizeRun(run, { color: !!process.stdout.isTTY }).text);
}
