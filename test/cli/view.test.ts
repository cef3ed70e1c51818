// `moe-actors view` / `summary` on a copy of the committed 4-rank EP run (test/fixtures/trace/ep4): the artefacts
// are written into the run folder and valid, the summary table is plain text when stdout is not a terminal, and a
// folder without events is a clear error.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, show, TRACE_FIXTURES } from './helpers.ts';

const tmp = mkdtempSync(join(tmpdir(), 'moe-cli-view-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const run = join(tmp, 'ep4');
cpSync(join(TRACE_FIXTURES, 'ep4'), run, { recursive: true });

describe('moe-actors view and summary', () => {
  it('view writes trace.json and timeline.html into the run folder and prints their paths', async () => {
    const r = await cli(['view', run]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain(`timeline: ${join(run, 'timeline.html')}`);
    expect(r.stdout).toContain(`trace (Perfetto, chrome://tracing): ${join(run, 'trace.json')}`);
    expect(r.stdout).not.toMatch(/warning|trace\.json:/);
    const trace = JSON.parse(readFileSync(join(run, 'trace.json'), 'utf8')) as { traceEvents: unknown[] };
    expect(trace.traceEvents.length).toBeGreaterThan(1000);
    const html = readFileSync(join(run, 'timeline.html'), 'utf8');
    expect(html).toMatch(/^<!doctype html>/i);
    expect(html).not.toMatch(/<script[^>]+src=["']https?:/); // self-contained: opens offline
  });

  it('summary prints the per-layer, per-state table without colour codes when piped', async () => {
    const r = await cli(['summary', run]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toMatch(/^run: 4 ranks, 2 steps, /);
    expect(r.stdout).toMatch(/^all layers$/m);
    expect(r.stdout).toMatch(/^rank +dispatch +compute +combine/m);
    expect(r.stdout).toMatch(/^expert:dispatch( +[\d.]+){4} +\d+$/m);
    expect(r.stdout).not.toContain('\u001b[');
  });

  it('a folder without events: a clear error from both commands', async () => {
    const empty = join(tmp, 'empty');
    mkdirSync(join(empty, 'events'), { recursive: true });
    writeFileSync(join(empty, 'events', 'rank-0.jsonl'), '{"kind":"meta","version":1,"rank":0,"clockOffsetMs":0}\n');
    const [v, s, none] = await Promise.all([cli(['view', empty]), cli(['summary', empty]), cli(['summary', tmp])]);
    for (const r of [v, s]) {
      expect(r.code, show(r)).toBe(1);
      expect(r.stderr).toContain('1 event file(s) but no recorded events in them');
    }
    expect(existsSync(join(empty, 'timeline.html'))).toBe(false);
    expect(none.code, show(none)).toBe(1);
    expect(none.stderr).toContain(`${tmp}: no events/ folder, so nothing to show`);
  });
});
