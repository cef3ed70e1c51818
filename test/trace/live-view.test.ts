import { describe, expect, it } from 'vitest';
import type { TraceEvent } from '../../src/protocols/events.ts';
import { LiveView } from '../../src/trace/live-view.ts';

const ESC = '\x1b';
function sink(isTTY: boolean, columns = 120) {
  const out = {
    isTTY,
    columns,
    text: '',
    write(s: string) {
      this.text += s;
      return true;
    },
  };
  return out;
}
const enter = (rank: number, state: string, t: number, layer = 2): TraceEvent => ({
  kind: 'state',
  rank,
  actor: 'expert',
  machine: 'moeLayer',
  state,
  category: 'dispatch',
  phase: 'enter',
  t,
  step: 3,
  layer,
  microbatch: 1,
});

describe('LiveView', () => {
  it('on a TTY redraws one line per rank in place, cut to the terminal width', () => {
    let now = 1000;
    const out = sink(true);
    const v = new LiveView({ out, now: () => now, color: false });
    v.record(enter(0, 'dispatch', 995));
    v.record(enter(1, 'compute', 990));
    v.record({
      kind: 'collective',
      rank: 0,
      actor: 'expert',
      op: 'all_to_all_v',
      group: 'ep',
      groupRanks: [0, 1],
      seq: 57,
      phase: 'start',
      t: 996,
      dtype: 'float32',
      inNelems: 1,
      outNelems: 1,
      bytesSent: 4,
      bytesReceived: 4,
      tag: null,
      step: 3,
      layer: 2,
      microbatch: 1,
    });
    v.refresh();
    const first = out.text;
    expect(first.split('\n').filter(Boolean)).toHaveLength(2);
    expect(first).toContain(`${ESC}[2K`);
    expect(first).not.toContain(`${ESC}[2F`);
    expect(first).toMatch(/rank 0 +step 3 +layer 2 +mb 1 +expert:dispatch 5\.0 ms +⟂ all_to_all_v #57 on ep 4\.0 ms/);
    now = 1010;
    out.text = '';
    out.columns = 50; // the terminal got narrower: lines are cut, never wrapped
    v.refresh();
    expect(out.text.startsWith(`${ESC}[2F`)).toBe(true); // back to the top of the block
    const lines = out.text
      .split('\n')
      .filter(Boolean)
      .map((l) => l.replace(/\x1b\[[0-9;]*[A-Za-z]/g, ''));
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(49);
    expect(lines[0]).toMatch(/…$/);
  });

  it('without a TTY prints plain periodic lines, no escape codes, and flags a stalled rank', () => {
    let now = 0;
    const out = sink(false);
    const v = new LiveView({ out, now: () => now, stallMs: 1000 });
    v.record(enter(0, 'dispatch', 0));
    v.record(enter(1, 'dispatch', 0));
    now = 3000;
    v.record(enter(0, 'compute', 2990));
    v.refresh();
    expect(out.text).not.toContain(ESC);
    const lines = out.text.trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^\[live \+3\.0 s\] rank 0 .*expert:compute 10 ms$/);
    expect(lines[1]).toMatch(/rank 1 .*expert:dispatch 3\.0 s +no events for 3\.0 s/);
  });

  it('shows a failed collective instead of a stall', () => {
    const out = sink(false);
    const v = new LiveView({ out, now: () => 100 });
    v.record({
      kind: 'collective',
      rank: 2,
      actor: 'expert',
      op: 'all_gather',
      group: 'fsdp',
      groupRanks: [0, 2],
      seq: 4,
      phase: 'start',
      t: 1,
      dtype: 'float32',
      inNelems: 1,
      outNelems: 2,
      bytesSent: 4,
      bytesReceived: 8,
      tag: null,
      step: 0,
      layer: null,
      microbatch: null,
    });
    v.record({
      kind: 'collective',
      rank: 2,
      actor: 'expert',
      op: 'all_gather',
      group: 'fsdp',
      groupRanks: [0, 2],
      seq: 4,
      phase: 'end',
      t: 61,
      dtype: 'float32',
      inNelems: 1,
      outNelems: 2,
      bytesSent: 4,
      bytesReceived: 8,
      tag: null,
      step: 0,
      layer: null,
      microbatch: null,
      error: 'timeout after 60 ms\nmore',
    });
    v.stop();
    expect(out.text).toMatch(/rank 2 .*FAILED all_gather #4 on fsdp: timeout after 60 ms$/m);
  });
});

describe('LiveView layer', () => {
  it('is the layer of the newest open state, not of the last event (a prefetch for the next layer)', () => {
    const out = sink(false);
    const v = new LiveView({ out, now: () => 10 });
    v.record(enter(0, 'dispatch', 1, 2));
    v.record({
      kind: 'collective',
      rank: 0,
      actor: 'fsdp',
      op: 'all_gather',
      group: 'fsdp',
      groupRanks: [0, 1],
      seq: 9,
      phase: 'start',
      t: 2,
      dtype: 'float32',
      inNelems: 1,
      outNelems: 2,
      bytesSent: 4,
      bytesReceived: 8,
      tag: null,
      step: 3,
      layer: 3,
      microbatch: 1,
    });
    v.refresh();
    expect(out.text).toMatch(/layer 2 .*expert:dispatch/);
  });
});
