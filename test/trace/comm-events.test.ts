import { describe, expect, it } from 'vitest';
import type { CallSite, Communicator } from '../../src/comm/communicator.ts';
import { FlightRecorder, nowMs } from '../../src/comm/flight-recorder.ts';
import type { TraceEvent } from '../../src/protocols/events.ts';
import { TraceBridge } from '../../src/actors/trace-bridge.ts';
import { buildModel } from '../../src/trace/model.ts';

describe('TraceBridge.commObserver', () => {
  // World rank 5 is group rank 1 of group ep [4,5].
  const comm = { rank: 1, ranks: [4, 5] } as unknown as Communicator;
  const spec = {
    group: 'ep',
    groupRanks: [4, 5],
    op: 'all_gather' as const,
    tag: 'layer 3 dispatch',
    dtype: 'float32' as const,
    inNelems: 10,
    outNelems: 20,
    timeoutMs: 100,
  };
  const setup = () => {
    const events: TraceEvent[] = [];
    const site = (layer: number): CallSite => ({
      actor: 'expert',
      machine: 'moeLayer',
      state: 'dispatch',
      step: 7,
      layer,
      microbatch: 1,
    });
    const bridge = new TraceBridge(5, { record: (e) => events.push(e) });
    bridge.step = 7;
    return { events, site, obs: bridge.commObserver(), fr: new FlightRecorder(5, 8, 'test') };
  };

  it('turns communicator callbacks into start/end events a model pairs, with the failure text', () => {
    const { events, site, obs, fr } = setup();
    const a = fr.schedule({ ...spec, seq: 1 });
    fr.start(a);
    obs.onStart!(comm, a, site(3));
    fr.complete(a);
    obs.onEnd!(comm, a, site(3));
    const b = fr.schedule({ ...spec, seq: 2 });
    fr.start(b);
    obs.onStart!(comm, b, site(4));
    fr.fail(b, 'timeout after 100 ms');
    obs.onEnd!(comm, b, site(4));

    expect(
      events.map(
        (e) =>
          e.kind === 'collective' && [e.phase, e.seq, e.rank, e.layer, e.bytesSent, e.bytesReceived, e.error ?? null],
      ),
    ).toEqual([
      ['start', 1, 5, 3, 40, 80, null],
      ['end', 1, 5, 3, 40, 80, null],
      ['start', 2, 5, 4, 40, 80, null],
      ['end', 2, 5, 4, 40, 80, 'timeout after 100 ms'],
    ]);
    expect(events.map((e) => e.kind === 'collective' && [e.actor, e.step, e.microbatch, e.groupRanks, e.t])).toEqual([
      ['expert', 7, 1, [4, 5], a.tStarted],
      ['expert', 7, 1, [4, 5], a.tCompleted],
      ['expert', 7, 1, [4, 5], b.tStarted],
      ['expert', 7, 1, [4, 5], b.tCompleted],
    ]);
    const m = buildModel(events);
    expect(m.collectives.map((c) => [c.seq, c.unfinished, c.error])).toEqual([
      [1, false, null],
      [2, false, 'timeout after 100 ms'],
    ]);
  });

  it("stamps missing times with the clock, counts a call without a call site as the step row's, and a failure without text without an error", () => {
    const { events, site, obs, fr } = setup();
    const a = fr.schedule({ ...spec, seq: 1 });
    const t0 = nowMs();
    obs.onStart!(comm, a, site(3)); // never started: no tStarted
    fr.complete(a);
    a.tCompleted = null;
    obs.onEnd!(comm, a, site(3));
    const t1 = nowMs();
    const b = fr.schedule({ ...spec, seq: 2 });
    fr.start(b);
    b.state = 'failed';
    b.tCompleted = b.tStarted;
    obs.onEnd!(comm, b);

    expect(
      events.map((e) => e.kind === 'collective' && [e.phase, e.seq, e.actor, e.step, e.layer, 'error' in e]),
    ).toEqual([
      ['start', 1, 'expert', 7, 3, false],
      ['end', 1, 'expert', 7, 3, false],
      ['end', 2, 'step', 7, null, false],
    ]);
    for (const e of events.slice(0, 2)) {
      expect(e.t).toBeGreaterThanOrEqual(t0);
      expect(e.t).toBeLessThanOrEqual(t1);
    }
  });
});
