import { describe, expect, it } from 'vitest';
import type { Communicator } from '../../src/comm/communicator.ts';
import { FlightRecorder } from '../../src/comm/flight-recorder.ts';
import type { TraceEvent } from '../../src/protocols/events.ts';
import { collectiveObserver } from '../../src/trace/comm-events.ts';
import { buildModel } from '../../src/trace/model.ts';

describe('collectiveObserver', () => {
  it('turns communicator callbacks into start/end events a model pairs, with the failure text', () => {
    const events: TraceEvent[] = [];
    let layer = 3;
    const obs = collectiveObserver({ record: (e) => events.push(e) }, () => ({ actor: 'expert', step: 7, layer, microbatch: 1 }));
    // World rank 5 is group rank 1 of group ep [4,5].
    const comm = { rank: 1, ranks: [4, 5] } as unknown as Communicator;
    const fr = new FlightRecorder(5, 8, 'test');
    const spec = { group: 'ep', groupRanks: [4, 5], op: 'all_gather' as const, tag: 'layer 3 dispatch', dtype: 'float32' as const, inNelems: 10, outNelems: 20, timeoutMs: 100 };
    const a = fr.schedule({ ...spec, seq: 1 });
    fr.start(a);
    obs.onStart!(comm, a);
    layer = 4; // the end keeps the context of the start
    fr.complete(a);
    obs.onEnd!(comm, a);
    const b = fr.schedule({ ...spec, seq: 2 });
    fr.start(b);
    obs.onStart!(comm, b);
    fr.fail(b, 'timeout after 100 ms');
    obs.onEnd!(comm, b);

    expect(events.map((e) => e.kind === 'collective' && [e.phase, e.seq, e.rank, e.layer, e.bytesSent, e.bytesReceived, e.error ?? null])).toEqual([
      ['start', 1, 5, 3, 40, 80, null],
      ['end', 1, 5, 3, 40, 80, null],
      ['start', 2, 5, 4, 40, 80, null],
      ['end', 2, 5, 4, 40, 80, 'timeout after 100 ms'],
    ]);
    const m = buildModel(events);
    expect(m.collectives.map((c) => [c.seq, c.unfinished, c.error])).toEqual([
      [1, false, null],
      [2, false, 'timeout after 100 ms'],
    ]);
  });
});
