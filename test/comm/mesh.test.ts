// DeviceMesh: torchtitan's layout rules (semantics §4.1), the groups every dim forms, invalid degrees with their
// messages, and the communicators DeviceMesh builds on an inproc world.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createInprocWorld } from '../../src/comm/inproc/launch.ts';
import {
  batchShard,
  buildDeviceMesh,
  describeLayout,
  expertRange,
  groupsOf,
  MESH_DIMS,
  MeshError,
  planMesh,
  type ParallelDegrees,
} from '../../src/comm/mesh.ts';

describe('mesh layout', () => {
  it("the spec's example: dp_shard=4, ep=2 → ep {0,1},{2,3}; efsdp {0,2},{1,3}", () => {
    const l = planMesh({ dp_shard: 4, ep: 2 }, 4);
    expect(groupsOf(l, 'ep')).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(groupsOf(l, 'efsdp')).toEqual([
      [0, 2],
      [1, 3],
    ]);
    expect(groupsOf(l, 'fsdp')).toEqual([[0, 1, 2, 3]]);
    expect(groupsOf(l, 'batch')).toEqual([[0, 1, 2, 3]]);
    expect(groupsOf(l, 'loss')).toEqual([[0, 1, 2, 3]]);
    expect(groupsOf(l, 'dp_replicate')).toEqual([[0], [1], [2], [3]]);
    expect(l.sizes).toMatchObject({
      efsdp: 2,
      ep: 2,
      fsdp: 4,
      batch: 4,
      loss: 4,
      tp: 1,
      pp: 1,
      cp: 1,
      etp: 1,
      dp_replicate: 1,
    });
    expect(l.fsdpEnabled).toBe(true);
  });

  it('dp_shard = -1 is inferred from the world size', () => {
    expect(planMesh({}, 6).degrees.dp_shard).toBe(6);
    expect(planMesh({ dp_replicate: 2 }, 6).degrees.dp_shard).toBe(3);
  });

  it('HSDP: dp_replicate=2, dp_shard=2', () => {
    const l = planMesh({ dp_replicate: 2, dp_shard: 2 }, 4);
    expect(groupsOf(l, 'dp_replicate')).toEqual([
      [0, 2],
      [1, 3],
    ]);
    expect(groupsOf(l, 'fsdp')).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(groupsOf(l, 'batch')).toEqual([[0, 1, 2, 3]]);
    expect(batchShard(l, 3)).toEqual({ index: 3, degree: 4 });
  });

  it('HSDP with EP: dp_replicate=2, dp_shard=4, ep=2 on 8 ranks', () => {
    const l = planMesh({ dp_replicate: 2, dp_shard: 4, ep: 2 }, 8);
    expect(groupsOf(l, 'ep')).toEqual([
      [0, 1],
      [2, 3],
      [4, 5],
      [6, 7],
    ]);
    expect(groupsOf(l, 'efsdp')).toEqual([
      [0, 2],
      [1, 3],
      [4, 6],
      [5, 7],
    ]);
    expect(groupsOf(l, 'dp_replicate')).toEqual([
      [0, 4],
      [1, 5],
      [2, 6],
      [3, 7],
    ]);
    expect(groupsOf(l, 'fsdp')).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
    ]);
    expect(expertRange(l, 5, 8)).toEqual({ start: 4, end: 8, local: 4 });
    expect(expertRange(l, 6, 8)).toEqual({ start: 0, end: 4, local: 4 });
  });

  it('EP borrowing TP (validated for planning only): tp=2, dp_shard=2, ep=2', () => {
    const l = planMesh({ dp_shard: 2, tp: 2, ep: 2 }, 4, { allowUnsupported: true });
    expect(groupsOf(l, 'tp')).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(groupsOf(l, 'fsdp')).toEqual([
      [0, 2],
      [1, 3],
    ]);
    expect(groupsOf(l, 'ep')).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(groupsOf(l, 'efsdp')).toEqual([
      [0, 2],
      [1, 3],
    ]);
    // Both tp ranks of a batch shard load the same data.
    expect([0, 1, 2, 3].map((r) => batchShard(l, r).index)).toEqual([0, 0, 1, 1]);
  });

  it('loss is batch × cp flattened (cp=2, planning only)', () => {
    const l = planMesh({ dp_shard: 2, cp: 2 }, 4, { allowUnsupported: true });
    expect(groupsOf(l, 'cp')).toEqual([
      [0, 1],
      [2, 3],
    ]);
    expect(groupsOf(l, 'batch')).toEqual([
      [0, 2],
      [1, 3],
    ]);
    expect(groupsOf(l, 'loss')).toEqual([[0, 1, 2, 3]]);
    expect(groupsOf(l, 'fsdp')).toEqual([[0, 1, 2, 3]]);
  });

  it('every dim partitions the world into groups of its size (random valid layouts)', () => {
    const arb = fc.record({
      dp_replicate: fc.integer({ min: 1, max: 3 }),
      dp_shard: fc.integer({ min: 1, max: 4 }),
      cp: fc.integer({ min: 1, max: 2 }),
      tp: fc.integer({ min: 1, max: 2 }),
      pp: fc.integer({ min: 1, max: 2 }),
      ep: fc.integer({ min: 1, max: 4 }),
      etpIsTp: fc.boolean(),
    });
    fc.assert(
      fc.property(arb, (a) => {
        const deg: Partial<ParallelDegrees> = {
          dp_replicate: a.dp_replicate,
          dp_shard: a.dp_shard,
          cp: a.cp,
          tp: a.tp,
          pp: a.pp,
          ep: a.ep,
          etp: a.etpIsTp && a.ep > 1 ? a.tp : 1,
        };
        const world = a.dp_replicate * a.dp_shard * a.cp * a.tp * a.pp;
        let l;
        try {
          l = planMesh(deg, world, { allowUnsupported: true });
        } catch (e) {
          // Only the efsdp exactness rule may reject these inputs.
          expect((e as MeshError).field).toBe('ep');
          expect((a.dp_shard * a.cp * a.tp) % ((deg.etp ?? 1) * a.ep)).not.toBe(0);
          return;
        }
        for (const dim of MESH_DIMS) {
          const gs = groupsOf(l, dim);
          expect(gs.flat().sort((x, y) => x - y)).toEqual(Array.from({ length: world }, (_, i) => i));
          for (const g of gs) expect(g.length).toBe(l.sizes[dim]);
        }
        expect(l.sizes.efsdp * l.sizes.ep * l.sizes.etp).toBe(l.sizes.fsdp * l.sizes.tp);
      }),
      { numRuns: 200, seed: 42 },
    );
  });

  it('describeLayout lists every group', () => {
    const text = describeLayout(planMesh({ dp_shard: 4, ep: 2 }, 4));
    expect(text).toContain('ep           size 2   groups {0,1} {2,3}');
    expect(text).toContain('efsdp        size 2   groups {0,2} {1,3}');
  });
});

describe('invalid degrees name the field, the value, the rule and the fix', () => {
  const cases: [string, Partial<ParallelDegrees>, number, { numExperts?: number; seqLen?: number }, string, RegExp][] =
    [
      [
        'a zero degree',
        { ep: 0 },
        4,
        {},
        'ep',
        /invalid parallelism: ep = 0: every degree must be an integer ≥ 1 .*Fix: set ep = 1/,
      ],
      [
        'dp_shard not -1 or ≥ 1',
        { dp_shard: -2 },
        4,
        {},
        'dp_shard',
        /dp_shard = -2: must be −1 \(infer\) or an integer ≥ 1/,
      ],
      [
        'product ≠ world',
        { dp_shard: 3 },
        4,
        {},
        'dp_shard',
        /dp_shard = 3: dp_replicate·dp_shard·cp·tp·pp must equal the world size: 1·3·1·1·1 = 3 ≠ 4 .*Fix: set dp_shard = 4 \(or -1 to infer it\)/,
      ],
      [
        'other degrees not dividing the world',
        { dp_replicate: 3 },
        4,
        {},
        'dp_replicate·cp·tp·pp',
        /3·1·1·1·1 = 3 ≠ 4.*run on a multiple of 3 ranks/,
      ],
      [
        'inferred dp_shard of 0',
        { dp_replicate: 8 },
        4,
        {},
        'dp_shard',
        /inferred as world_size \/\/ \(dp_replicate·cp·tp·pp\) = 4 \/\/ 8 = 0/,
      ],
      [
        'efsdp not exact',
        { dp_shard: 4, ep: 3 },
        4,
        {},
        'ep',
        /ep = 3: efsdp = dp_shard·cp·tp \/ \(etp·ep\) = 4 \/ 3 must be exact.*choose ep among 1, 2, 4/,
      ],
      [
        'etp neither tp nor 1',
        { dp_shard: 4, ep: 2, etp: 2 },
        4,
        {},
        'etp',
        /etp = 2: with ep > 1, etp must equal tp \(1\) or 1 .*Fix: set etp = 1$/,
      ],
      [
        'experts not divisible',
        { dp_shard: 4, ep: 4 },
        4,
        { numExperts: 6 },
        'ep',
        /the 6 routed experts must divide evenly over ep ranks \(E % ep == 0\).*choose ep among 1, 2, 3, 6/,
      ],
      ['odd seq_len', { dp_shard: 4 }, 4, { seqLen: 7 }, 'seq_len', /seq_len must be divisible by tp·2·cp = 2/],
      [
        'tp > 1',
        { dp_shard: 2, tp: 2 },
        4,
        {},
        'tp',
        /tp = 2: tensor parallelism is valid for torchtitan but not supported yet by moe-actors/,
      ],
      ['pp > 1', { dp_shard: 2, pp: 2 }, 4, {}, 'pp', /pipeline parallelism .* not supported yet/],
      ['cp > 1', { dp_shard: 2, cp: 2 }, 4, {}, 'cp', /context parallelism .* not supported yet/],
    ];
  for (const [what, deg, world, opts, field, re] of cases) {
    it(what, () => {
      let err: unknown;
      try {
        planMesh(deg, world, opts);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MeshError);
      expect((err as MeshError).field).toBe(field);
      expect((err as MeshError).message).toMatch(re);
    });
  }
});

describe('DeviceMesh on inproc', () => {
  async function meshes(size: number, deg: Partial<ParallelDegrees>) {
    const w = createInprocWorld(size, { seed: 3, timeoutMs: 5000 });
    return Promise.all(w.comms.map((c) => buildDeviceMesh(c, deg, { numExperts: 8 })));
  }

  it('each rank gets the layout groups as communicators; degree-1 dims are size-1 groups', async () => {
    const ms = await meshes(4, { dp_shard: 4, ep: 2 });
    expect(ms.map((m) => m.get('ep').ranks)).toEqual([
      [0, 1],
      [0, 1],
      [2, 3],
      [2, 3],
    ]);
    expect(ms.map((m) => m.get('efsdp').ranks)).toEqual([
      [0, 2],
      [1, 3],
      [0, 2],
      [1, 3],
    ]);
    expect(ms.map((m) => m.get('tp').ranks)).toEqual([[0], [1], [2], [3]]);
    expect(ms.map((m) => m.experts(8))).toEqual([
      { start: 0, end: 4, local: 4 },
      { start: 4, end: 8, local: 4 },
      { start: 0, end: 4, local: 4 },
      { start: 4, end: 8, local: 4 },
    ]);
    // A collective on each ep group sums within the pair only; the byte counters see it under "ep".
    const sums = await Promise.all(
      ms.map(async (m) => {
        const b = new Float32Array([m.rank + 1]);
        await m.get('ep').allReduce(b, { op: 'sum' });
        await m.get('tp').allReduce(b, { op: 'sum' });
        return b[0];
      }),
    );
    expect(sums).toEqual([3, 3, 7, 7]);
    const bytes = ms[0]!.bytesByGroup();
    expect(bytes.ep).toEqual({ sent: 4, received: 4, calls: 1 });
    expect(bytes.tp).toEqual({ sent: 4, received: 4, calls: 1 });
    expect(bytes.world).toEqual({ sent: 0, received: 0, calls: 0 });
    expect(Object.keys(bytes).sort()).toEqual([...MESH_DIMS, 'world'].sort());
  });

  it('HSDP mesh on 8 ranks', async () => {
    const ms = await meshes(8, { dp_replicate: 2, dp_shard: 4, ep: 2 });
    expect(ms[5]!.get('dp_replicate').ranks).toEqual([1, 5]);
    expect(ms[5]!.get('fsdp').ranks).toEqual([4, 5, 6, 7]);
    expect(ms[5]!.get('efsdp').ranks).toEqual([5, 7]);
    expect(ms[5]!.batch).toEqual({ index: 5, degree: 8 });
  });

  it('invalid degrees fail before any communication', async () => {
    const w = createInprocWorld(2, { timeoutMs: 5000 });
    await expect(buildDeviceMesh(w.comms[0]!, { dp_shard: 4 })).rejects.toThrow(
      /dp_shard = 4: dp_replicate·dp_shard·cp·tp·pp must equal the world size/,
    );
    expect(w.comms[0]!.bytes.calls).toBe(0);
  });
});
