// inspect on synthetic dumps (as any transport writes them): who did not join which collective, mismatches,
// collectives everyone joined that never completed, missing dumps, wait cycles; and the dump files themselves.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { FlightDump, FlightEntry } from '../../src/comm/flight-recorder.ts';
import { diagnose, formatInspect, readDump, readDumps, writeDumpSync } from '../../src/comm/inspect.ts';

type E = Partial<FlightEntry> & Pick<FlightEntry, 'group' | 'groupRanks' | 'seq' | 'op' | 'state'>;

/** A dump whose group status is derived from its entries, like FlightRecorder does. */
function dump(rank: number, worldSize: number, entries: E[], backend = 'mpi/full'): FlightDump {
  const full: FlightEntry[] = entries.map((e, id) => ({
    id,
    tag: null,
    dtype: 'float32',
    inNelems: 16,
    outNelems: 16,
    tCreated: 1000 + id,
    tStarted: 1000 + id,
    tCompleted: e.state === 'completed' ? 1001 + id : null,
    timeoutMs: 600000,
    ...e,
  }));
  const groups = new Map<string, FlightDump['groups'][number]>();
  for (const e of full) {
    const k = `${e.group}[${e.groupRanks.join(',')}]`;
    const g = groups.get(k) ?? {
      group: e.group,
      groupRanks: e.groupRanks,
      lastEnqueued: 0,
      lastStarted: 0,
      lastCompleted: 0,
    };
    g.lastEnqueued = Math.max(g.lastEnqueued, e.seq);
    g.lastStarted = Math.max(g.lastStarted, e.seq);
    if (e.state === 'completed') g.lastCompleted = Math.max(g.lastCompleted, e.seq);
    groups.set(k, g);
  }
  return {
    version: 1,
    rank,
    worldSize,
    backend,
    pid: 100 + rank,
    reason: 'test',
    tDump: 5000,
    groups: [...groups.values()],
    entries: full,
  };
}

const W = [0, 1, 2, 3];
const ar = (seq: number, state: FlightEntry['state'], extra: Partial<FlightEntry> = {}): E => ({
  group: 'world',
  groupRanks: W,
  seq,
  op: 'all_reduce',
  reduceOp: 'sum',
  state,
  ...extra,
});

describe('inspect', () => {
  it('healthy dumps: nothing to report', () => {
    const ds = W.map((r) => dump(r, 4, [ar(1, 'completed'), ar(2, 'completed')]));
    const d = diagnose(ds);
    expect(d.findings).toEqual([]);
    expect(d.text).toContain('every group: all members joined and completed every recorded collective');
    expect(d.text).toContain('where the ranks are: ranks 0,1,2,3 are not in a collective');
  });

  it('a rank that did not join: "Not all ranks joining collective #5 … missing ranks: {1}"', () => {
    const done = [1, 2, 3, 4].map((s) => ar(s, 'completed'));
    const ds = [
      dump(0, 4, [...done, ar(5, 'started')]),
      dump(1, 4, done),
      dump(2, 4, [...done, ar(5, 'started')]),
      dump(3, 4, [...done, ar(5, 'started')]),
    ];
    const d = diagnose(ds);
    expect(d.findings).toHaveLength(1);
    expect(d.findings[0]).toMatchObject({ kind: 'missing', seq: 5, joined: [0, 2, 3], missing: [1] });
    expect(d.text).toContain(
      'group world (ranks 0,1,2,3): Not all ranks joining collective #5 (all_reduce, sum, float32, 16 elements): missing ranks: {1}; joined: {0,2,3} (state: started); rank 1 last enqueued #4 here',
    );
    expect(d.text).toContain(
      'where the ranks are: rank 1 is not in a collective, ranks 0,2,3 in all_reduce #5 on group world',
    );
    expect(d.text).toContain('flight recorder analysis: 4 dump(s), world size 4, backend mpi/full');
  });

  it('a missing dump counts as a missing rank', () => {
    const ds = [0, 1, 2].map((r) =>
      dump(r, 4, [
        ar(1, 'completed'),
        ar(2, 'failed', { error: 'timeout after 100 ms in all_reduce #2 on group world: …' }),
      ]),
    );
    const d = diagnose(ds, { notes: new Map([[3, 'exit code 139']]) });
    expect(d.missingDumps).toEqual([3]);
    expect(d.text).toContain('no dump from rank 3');
    // #1 completed on ranks 0..2, so rank 3 took part in it; #2 is the first it may not have joined.
    expect(d.text).toMatch(/Not all ranks joining collective #2 .*missing ranks: \{3\} \(no dump from rank 3\)/);
    expect(d.text).toContain('rank 3 is without a dump (exit code 139)');
    expect(d.text).toContain('ranks 0,1,2: timeout after 100 ms in all_reduce #2 on group world: …');
  });

  it('a size mismatch at one sequence number', () => {
    const rs = (seq: number, state: FlightEntry['state'], n: number): E => ({
      group: 'fsdp',
      groupRanks: W,
      seq,
      op: 'reduce_scatter',
      reduceOp: 'sum',
      state,
      inNelems: n,
      outNelems: n / 4,
    });
    const ds = W.map((r) =>
      dump(r, 4, [ar(1, 'completed'), rs(11, 'completed', 1000), rs(12, 'started', r === 3 ? 1024 : 1000)]),
    );
    const d = diagnose(ds);
    expect(d.findings.map((f) => f.kind)).toEqual(['mismatch']);
    expect(d.text).toContain(
      'group fsdp (ranks 0,1,2,3): mismatch at collective #12: rank 3 called reduce_scatter #12 on group fsdp with 1024 elements, ranks 0,1,2 with 1000',
    );
  });

  it('an all_to_all_v whose splits disagree between sender and receiver', () => {
    const P = [0, 1];
    const a2a = (r: number): E => ({
      group: 'ep',
      groupRanks: P,
      seq: 1,
      op: 'all_to_all_v',
      state: 'started',
      inSplits: r === 0 ? [1, 3] : [2, 2],
      outSplits: r === 0 ? [1, 2] : [2, 2],
      inNelems: 4,
      outNelems: r === 0 ? 3 : 4,
    });
    const d = diagnose([dump(0, 2, [a2a(0)]), dump(1, 2, [a2a(1)])]);
    expect(d.text).toContain(
      'rank 0 sends 3 elements to rank 1 in all_to_all_v #1 on group ep, but rank 1 expects 2 from rank 0',
    );
  });

  it('a desync across groups with a wait cycle; groups with the same name are told apart by their ranks', () => {
    const ep = (ranks: number[], seq: number, state: FlightEntry['state']): E => ({
      group: 'ep',
      groupRanks: ranks,
      seq,
      op: 'all_gather',
      state,
    });
    const fs = (seq: number, state: FlightEntry['state']): E => ({
      group: 'fsdp',
      groupRanks: W,
      seq,
      op: 'reduce_scatter',
      reduceOp: 'sum',
      state,
    });
    const ds = [
      dump(0, 4, [fs(1, 'completed'), ep([0, 1], 1, 'completed'), fs(2, 'started')], 'threads/xccl-2025'),
      dump(1, 4, [fs(1, 'completed'), ep([0, 1], 1, 'completed'), fs(2, 'started')], 'threads/xccl-2025'),
      dump(2, 4, [fs(1, 'completed'), ep([2, 3], 1, 'completed'), ep([2, 3], 2, 'started')], 'threads/xccl-2025'),
      dump(3, 4, [fs(1, 'completed'), ep([2, 3], 1, 'completed'), fs(2, 'started')], 'threads/xccl-2025'),
    ];
    const d = diagnose(ds);
    expect(d.text).toContain(
      'where the ranks are: rank 2 is in all_gather #2 on group ep, ranks 0,1,3 in reduce_scatter #2 on group fsdp',
    );
    expect(d.text).toContain('group ep (ranks 2,3): Not all ranks joining collective #2');
    expect(d.text).toContain('group fsdp (ranks 0,1,2,3): Not all ranks joining collective #2');
    // ep {0,1} is healthy and not confused with ep {2,3}.
    expect(d.findings.filter((f) => f.group === 'ep')).toHaveLength(1);
    expect(d.cycle).toBe(
      'rank 2 (all_gather #2 on group ep) waits for rank 3, rank 3 (reduce_scatter #2 on group fsdp) waits for rank 2',
    );
  });

  it('everyone joined but the collective did not complete (transport stuck or failed)', () => {
    const ds = W.map((r) =>
      dump(r, 4, [ar(1, r < 2 ? 'failed' : 'started', r < 2 ? { error: 'peer-dead: worker 3 exited' } : {})]),
    );
    const d = diagnose(ds);
    expect(d.findings.map((f) => f.kind)).toEqual(['incomplete']);
    expect(d.text).toContain(
      'every rank joined collective #1 (all_reduce, sum, float32, 16 elements) but it did not complete: ranks 0,1 failed (peer-dead: worker 3 exited); ranks 2,3 started',
    );
  });

  it('entries dropped from the ring buffer: the group status still shows who is behind', () => {
    // Ranks 0..2 are at #300 but their rings kept only #299..#300; rank 3 stopped at #298.
    const ds = [0, 1, 2].map((r) => dump(r, 4, [ar(299, 'completed'), ar(300, 'started')]));
    ds.push(dump(3, 4, [ar(298, 'completed')]));
    const d = diagnose(ds);
    expect(d.findings[0]).toMatchObject({ kind: 'missing', seq: 299, missing: [3] });
    expect(d.text).toMatch(
      /Not all ranks joining collective #299 .*missing ranks: \{3\}.*1 later collective\(s\) on this group are pending too/,
    );
  });

  it('formatInspect with no dumps explains what to pass', () => {
    expect(formatInspect([])).toMatch(/no flight dumps given/);
  });

  describe('dump files', () => {
    const dir = mkdtempSync(join(tmpdir(), 'moe-inspect-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('write atomically (no temporary file left), read back equal, read a directory', () => {
      const ds = W.map((r) => dump(r, 4, [ar(1, 'completed')]));
      for (const d of ds) writeDumpSync(dir, d);
      expect(readdirSync(dir).sort()).toEqual([
        'flight-rank-0.json',
        'flight-rank-1.json',
        'flight-rank-2.json',
        'flight-rank-3.json',
      ]);
      expect(readDump(join(dir, 'flight-rank-2.json'))).toEqual(ds[2]);
      expect(
        readDumps([dir])
          .map((d) => d.rank)
          .sort(),
      ).toEqual(W);
    });

    it('a corrupt or foreign file is refused naming the file and the field', () => {
      const bad = join(dir, 'bad.json');
      writeFileSync(bad, '{"version": 2}');
      expect(() => readDump(bad)).toThrow(
        /bad\.json: not a flight dump of schema version 1: field "version" must be 1, got 2/,
      );
      writeFileSync(bad, '{"version": 1, "rank": 0, "worldSize": 2, "groups": [], "entries": [{"group": "world"}]}');
      expect(() => readDump(bad)).toThrow(/field "entries\[0\]\.group\/groupRanks"/);
      writeFileSync(bad, 'not json');
      expect(() => readDump(bad)).toThrow(/bad\.json: not a flight dump \(invalid JSON/);
    });
  });
});
