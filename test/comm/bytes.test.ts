// Byte counters summed by group name across a rank's communicators.
import { describe, expect, it } from 'vitest';
import { sumBytesByGroup, totalBytes } from '../../src/comm/bytes.ts';
import { createInprocWorld } from '../../src/comm/inproc/launch.ts';

describe('sumBytesByGroup', () => {
  it('sums communicators of the same name, counts a communicator listed twice once, and logs logical payload sizes', async () => {
    const w = createInprocWorld(2, { seed: 1 });
    const subs = await Promise.all(w.comms.map((c, r) => c.split(0, r, 'ep')));
    const subs2 = await Promise.all(w.comms.map((c, r) => c.split(0, r, 'ep')));
    await Promise.all(
      w.comms.map(async (c, r) => {
        await c.allGather(new Float32Array(3), new Float32Array(6)); // 12 B sent, 24 B received
        await subs[r]!.allReduce(new Float64Array(2), { op: 'sum' }); // 16 / 16
        await subs2[r]!.broadcast(new Int32Array(5), 0); // root sends 20, the other receives 20
      }),
    );
    const by0 = sumBytesByGroup([w.comms[0]!, subs[0]!, subs2[0]!, subs[0]!]);
    expect(by0).toEqual({ world: { sent: 12, received: 24, calls: 1 }, ep: { sent: 36, received: 16, calls: 2 } });
    expect(sumBytesByGroup([subs2[1]!]).ep).toEqual({ sent: 0, received: 20, calls: 1 });
    expect(totalBytes(by0)).toEqual({ sent: 48, received: 40, calls: 3 });
  });
});
