// Small rank programs for the failure tests: a training-like loop over three groups (world, ep pairs, fsdp = the
// whole world under another name), into which launch() injects faults, plus programs with their own bugs (a rank
// that skips a collective, a rank that exits early) and calls a profile forbids.

import type { Communicator } from '../../../src/comm/communicator.ts';
import type { RankContext } from '../../../src/comm/launch.ts';

export interface ScenarioArgs {
  scenario: 'steps' | 'skip' | 'early-exit' | 'all-to-all-uneven' | 'premul-world' | 'a2a-equal' | 'overlap';
  steps?: number;
  /** 'skip': the rank that skips one fsdp reduce_scatter, and at which step. */
  skipRank?: number;
  skipStep?: number;
}

export interface ScenarioResult {
  rank: number;
  steps: number;
  checksum: number;
}

async function groups(world: Communicator, rank: number): Promise<{ ep: Communicator; fsdp: Communicator }> {
  // ep pairs {0,1},{2,3},…; fsdp spans the world (a separate group with its own sequence numbers).
  const ep = await world.split(rank >> 1, rank, 'ep');
  const fsdp = await world.split(0, rank, 'fsdp');
  return { ep, fsdp };
}

export async function rankMain(ctx: RankContext<ScenarioArgs>): Promise<ScenarioResult> {
  const { world, rank, size, args } = ctx;
  const steps = args.steps ?? 5;
  let checksum = 0;
  switch (args.scenario) {
    case 'steps':
    case 'skip':
    case 'early-exit': {
      const { ep, fsdp } = await groups(world, rank);
      for (let s = 0; s < steps; s++) {
        if (args.scenario === 'early-exit' && rank === size - 1 && s === 2) return { rank, steps: s, checksum };
        const grad = new Float32Array(size * 4).fill(rank + s);
        const shard = new Float32Array(4);
        if (!(args.scenario === 'skip' && rank === args.skipRank && s === args.skipStep)) {
          await fsdp.reduceScatter(grad, shard, { op: 'sum' }, { tag: `step ${s} grads` });
        }
        const tokens = new Float32Array(ep.size * 3);
        await ep.allGather(new Float32Array(3).fill(rank), tokens, { tag: `step ${s} dispatch` });
        const loss = new Float64Array([rank * s]);
        await world.allReduce(loss, { op: 'sum' }, { tag: `step ${s} loss` });
        checksum += shard[0]! + tokens[0]! + loss[0]!;
      }
      return { rank, steps, checksum };
    }
    case 'overlap': {
      // The loss all_reduce stays in flight while the dispatch runs; if the dispatch fails, the program stops there
      // and never awaits the all_reduce (as real code does when it throws).
      const { ep } = await groups(world, rank);
      for (let s = 0; s < steps; s++) {
        const loss = new Float64Array([rank]);
        const inFlight = world.allReduce(loss, { op: 'sum' });
        await ep.allGather(new Float32Array(2), new Float32Array(2 * ep.size));
        await inFlight;
        checksum += loss[0]!;
      }
      return { rank, steps, checksum };
    }
    case 'all-to-all-uneven': {
      const counts = Array.from({ length: size }, (_, j) => 1 + ((rank + j) % 2));
      const recvCounts = Array.from({ length: size }, (_, i) => 1 + ((i + rank) % 2));
      const send = new Float32Array(counts.reduce((a, b) => a + b, 0));
      const recv = new Float32Array(recvCounts.reduce((a, b) => a + b, 0));
      await world.allToAllV(send, counts, recv, recvCounts);
      return { rank, steps: 1, checksum: recv.length };
    }
    case 'a2a-equal': {
      const send = new Float32Array(size * 2).fill(rank);
      const recv = new Float32Array(size * 2);
      await world.allToAllV(send, new Array(size).fill(2), recv, new Array(size).fill(2));
      return { rank, steps: 1, checksum: recv.reduce((a, b) => a + b, 0) };
    }
    case 'premul-world': {
      const { ep } = await groups(world, rank);
      const buf = new Float32Array([1, 2]);
      // Within a node this works under xccl-2026; across nodes it must be refused before anything is sent.
      await ep.allReduce(buf, { op: 'premul_sum', factor: 0.5 });
      await world.allReduce(buf, { op: 'premul_sum', factor: 0.5 });
      return { rank, steps: 1, checksum: buf[0]! };
    }
  }
}
