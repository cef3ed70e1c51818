import { mkdtempSync, readFileSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { StateEvent, TraceEvent } from '../../src/protocols/events.ts';
import { TraceRecorder, teeSink } from '../../src/trace/recorder.ts';
import { loadRun, readEventFile, runPaths } from '../../src/trace/run-dir.ts';

const dir = mkdtempSync(join(tmpdir(), 'trace-rec-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ev = (rank: number, t: number, phase: 'enter' | 'exit' = 'enter'): StateEvent => ({
  kind: 'state',
  rank,
  actor: 'expert',
  machine: 'moeLayer',
  state: 'compute',
  category: 'compute',
  phase,
  t,
  step: 0,
  layer: 1,
  microbatch: 0,
});

describe('TraceRecorder', () => {
  it('keeps the newest `capacity` events in memory, oldest first', () => {
    const rec = new TraceRecorder({ rank: 0, capacity: 8 });
    expect(rec.capacity).toBe(8);
    for (let i = 0; i < 20; i++) rec.record(ev(0, i));
    expect(rec.count).toBe(20);
    expect(rec.recent().map((e) => e.t)).toEqual([12, 13, 14, 15, 16, 17, 18, 19]);
  });

  it('rounds the capacity up to a power of two', () => {
    expect(new TraceRecorder({ rank: 0, capacity: 1000 }).capacity).toBe(1024);
  });

  it('streams JSON Lines in batches of flushEvery, and the rest on close', () => {
    const file = join(dir, 'batch', 'rank-3.jsonl');
    const rec = new TraceRecorder({ rank: 3, file, capacity: 64, flushEvery: 10, flushIntervalMs: 0 });
    for (let i = 0; i < 25; i++) rec.record(ev(3, i));
    // 2 full batches on disk, 5 events pending.
    expect(readEventFile(file).events.length).toBe(20);
    rec.close();
    rec.close();
    const f = readEventFile(file);
    expect(f.events.map((e) => e.t)).toEqual([...Array(25).keys()]);
    expect(f.meta).toMatchObject({ kind: 'meta', rank: 3, clockOffsetMs: 0 });
    expect(f.badLines).toBe(0);
    expect(rec.bytesWritten).toBe(readFileSync(file).length);
  });

  it('flushes the tail on a timer, so a stalled rank leaves its last events on disk', async () => {
    const file = join(dir, 'timer', 'rank-0.jsonl');
    const rec = new TraceRecorder({ rank: 0, file, flushEvery: 1000, flushIntervalMs: 20 });
    rec.record(ev(0, 1));
    rec.record(ev(0, 2));
    expect(readEventFile(file).events.length).toBe(0);
    await new Promise((r) => setTimeout(r, 80));
    expect(readEventFile(file).events.length).toBe(2);
    rec.close();
  });

  it('never loses events when flushEvery exceeds the capacity (it is clamped)', () => {
    const file = join(dir, 'clamp', 'rank-0.jsonl');
    const rec = new TraceRecorder({ rank: 0, file, capacity: 4, flushEvery: 100, flushIntervalMs: 0 });
    for (let i = 0; i < 50; i++) rec.record(ev(0, i));
    rec.close();
    expect(readEventFile(file).events.length).toBe(50);
  });

  it('writes at most maxFileEvents to the file, says so in its meta line, and keeps counting and ringing the rest', () => {
    const run = join(dir, 'capped');
    const file = runPaths(run).rankEvents(2);
    const rec = new TraceRecorder({ rank: 2, file, capacity: 8, flushEvery: 4, flushIntervalMs: 0, maxFileEvents: 10 });
    for (let i = 0; i < 25; i++) rec.record(ev(2, i));
    rec.setClockOffset(5, 0.1);
    rec.record(ev(2, 25));
    rec.close();
    expect(rec.count).toBe(26);
    expect(rec.fileEvents).toBe(10);
    expect(rec.recent().map((e) => e.t)).toEqual([18, 19, 20, 21, 22, 23, 24, 25]);
    const f = readEventFile(file);
    expect(f.events.map((e) => e.t)).toEqual([...Array(10).keys()]);
    expect(f.meta).toMatchObject({ rank: 2, truncatedAfter: 10, clockOffsetMs: 5 });
    expect(f.badLines).toBe(0);
    expect(rec.bytesWritten).toBe(readFileSync(file).length);
    expect(loadRun(run).warnings).toEqual([
      `${file}: rank 2 recorded more events than [trace] max_events = 10; the file holds the first 10, so the timeline ends early for this rank (raise max_events, or trace fewer steps)`,
    ]);
    // Exactly at the limit: nothing is dropped, nothing is said.
    const exact = join(dir, 'exact', 'rank-0.jsonl');
    const r2 = new TraceRecorder({ rank: 0, file: exact, flushEvery: 3, flushIntervalMs: 0, maxFileEvents: 6 });
    for (let i = 0; i < 6; i++) r2.record(ev(0, i));
    r2.close();
    expect(readEventFile(exact).events.length).toBe(6);
    expect(readEventFile(exact).meta!.truncatedAfter).toBeUndefined();
    expect(() => new TraceRecorder({ rank: 0, maxFileEvents: 0 })).toThrow(/maxFileEvents must be ≥ 1 \(got 0\)/);
  });

  it('tee fans events out to every sink', () => {
    const a: TraceEvent[] = [];
    const b: TraceEvent[] = [];
    const t = teeSink({ record: (e) => a.push(e) }, { record: (e) => b.push(e) });
    t.record(ev(0, 1));
    expect(a.length + b.length).toBe(2);
  });
});

describe('run directory merge', () => {
  it('applies each file’s last clock offset and sorts all ranks by time; a torn last line is tolerated', () => {
    const run = join(dir, 'run');
    const p = runPaths(run);
    const r0 = new TraceRecorder({ rank: 0, file: p.rankEvents(0), flushIntervalMs: 0 });
    const r1 = new TraceRecorder({ rank: 1, file: p.rankEvents(1), flushIntervalMs: 0 });
    r0.record(ev(0, 100));
    r0.record(ev(0, 110, 'exit'));
    // Rank 1's clock runs 1000 ms ahead of rank 0's.
    r1.record(ev(1, 1105));
    r1.record(ev(1, 1115, 'exit'));
    r1.setClockOffset(1000, 0.01);
    r0.close();
    r1.close();
    appendFileSync(p.rankEvents(1), '{"kind":"state","rank":1,"t":'); // killed mid-write
    const loaded = loadRun(run);
    expect(loaded.events.map((e) => [e.rank, e.t])).toEqual([
      [0, 100],
      [1, 105],
      [0, 110],
      [1, 115],
    ]);
    expect(loaded.files.find((f) => f.meta?.rank === 1)!.badLines).toBe(1);
    // Said, not hidden: a torn end looks the same as a truncated file, and the rank's timeline stops early.
    expect(loaded.warnings).toHaveLength(1);
    expect(loaded.warnings[0]).toMatch(/rank-1\.jsonl: ends inside a line .* timeline stops early at t = /);
    expect(loaded.files.find((f) => f.meta?.rank === 0)!.tornEnd).toBe(false);
  });

  it('says what is missing when a folder is not a run', () => {
    expect(() => loadRun(join(dir, 'nope'))).toThrow(/no events\/ directory/);
  });
});
