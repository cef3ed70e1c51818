// What callers see of a communicator beyond the collectives: observe() chains observers (after the transport's
// own), hands each the call's CallSite at start and end, and stops on unsubscribe; groups split later do not
// inherit an added observer; recorder is the rank's flight recorder; peerReadsInPlace is false on inproc.
import { describe, expect, it } from 'vitest';
import type { CallSite } from '../../src/comm/communicator.ts';
import { createInprocWorld } from '../../src/comm/inproc/launch.ts';

describe('Communicator.observe', () => {
  it('chains observers after the transport’s, hands them the call site, and stops on unsubscribe', async () => {
    const log: string[] = [];
    const world = createInprocWorld(2, { observer: { onStart: (c, e) => void log.push(`world ${c.rank} ${e.tag}`) } });
    const site: CallSite = {
      actor: 'expert',
      machine: 'moeLayer',
      state: 'dispatch',
      step: 3,
      layer: 1,
      microbatch: 0,
    };
    const stop = world.comms.map((c) =>
      c.observe({
        onStart: (_c, e, s) => void log.push(`mine ${c.rank} start ${e.tag} ${s?.state ?? '-'}@${s?.layer ?? '-'}`),
        onEnd: (_c, e, s) => void log.push(`mine ${c.rank} end ${e.tag} ${s?.machine ?? '-'}`),
      }),
    );
    await Promise.all(world.comms.map((c) => c.allReduce(new Float32Array([1]), { op: 'sum' }, { tag: 'a', site })));
    stop.forEach((f) => f());
    await Promise.all(world.comms.map((c) => c.allReduce(new Float32Array([1]), { op: 'sum' }, { tag: 'b' })));
    for (const r of [0, 1]) {
      expect(log.filter((l) => l.includes(` ${r} `))).toEqual([
        `world ${r} a`,
        `mine ${r} start a dispatch@1`,
        `mine ${r} end a moeLayer`,
        `world ${r} b`,
      ]);
    }
    expect(world.comms[0]!.recorder).toBe(world.recorders[0]);
    expect(world.comms[0]!.recorder.entries().map((e) => e.tag)).toEqual(['a', 'b']);
    expect(world.comms.every((c) => c.peerReadsInPlace === false)).toBe(true);
  });

  it('a group split after observe() does not inherit the added observer, only the transport’s', async () => {
    const seen: string[] = [];
    const world = createInprocWorld(2, { observer: { onStart: (c) => void seen.push(`transport ${c.name}`) } });
    world.comms.forEach((c) => c.observe({ onStart: (g) => void seen.push(`added ${g.name}`) }));
    const subs = await Promise.all(world.comms.map((c) => c.split(0, c.rank, 'half')));
    seen.length = 0;
    await Promise.all(subs.map((s) => s.barrier({ tag: 'x' })));
    expect(seen.sort()).toEqual(['transport half', 'transport half']);
  });
});
