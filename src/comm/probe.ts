// Startup probe: run every collective once on a communicator, with tiny buffers and a short timeout, check the
// results, and return the capabilities that really worked. A real backend's holes (an op it rejects, an op that
// returns wrong numbers, as XCCL's AVG on B60 did) are then recorded before the planner chooses a dispatch, instead
// of being discovered mid-run. Collective over the group: every member calls probe() at the same point.

import type { Capabilities } from './capabilities.ts';
import type { CommArray, Communicator } from './communicator.ts';
import { sum } from './counts.ts';
import { CollectiveError } from './errors.ts';

export interface ProbeResult {
  /** "all_gather", "all_reduce(avg)", "all_to_all_v(uneven)", "split", … */
  name: string;
  ok: boolean;
  /** Why it did not work: the error, "wrong result …", "not probed: …". */
  reason?: string;
  ms: number;
}

export interface ProbeReport {
  capabilities: Capabilities;
  results: ProbeResult[];
}

export interface ProbeOptions {
  /** Per-call timeout (default 2000 ms). */
  timeoutMs?: number;
}

type Check = { name: string; run: () => Promise<string | null> };

function expectEq(got: CommArray, want: readonly number[]): string | null {
  if (got.length !== want.length) return `wrong result: ${got.length} elements, expected ${want.length}`;
  for (let i = 0; i < want.length; i++) {
    if (Math.abs(got[i]! - want[i]!) > 1e-6 * Math.max(1, Math.abs(want[i]!)))
      return `wrong result: element ${i} is ${got[i]}, expected ${want[i]}`;
  }
  return null;
}

function checks(comm: Communicator, timeoutMs: number): Check[] {
  const P = comm.size;
  const me = comm.rank;
  const o = { timeoutMs, tag: 'probe' };
  const ranks = Array.from({ length: P }, (_, i) => i);
  const reduceCheck = (name: string, op: Parameters<Communicator['allReduce']>[1], want: number): Check => ({
    name,
    run: async () => {
      const b = new Float32Array([me + 1, 2 * (me + 1)]);
      await comm.allReduce(b, op, o);
      return expectEq(b, [want, 2 * want]);
    },
  });
  const a2a = (name: string, count: (i: number, j: number) => number): Check => ({
    name,
    run: async () => {
      const sendCounts = ranks.map((j) => count(me, j));
      const recvCounts = ranks.map((i) => count(i, me));
      const send = new Float32Array(sum(sendCounts));
      let k = 0;
      for (const j of ranks) for (let c = 0; c < sendCounts[j]!; c++) send[k++] = 100 * me + j;
      const recv = new Float32Array(sum(recvCounts));
      await comm.allToAllV(send, sendCounts, recv, recvCounts, o);
      return expectEq(
        recv,
        ranks.flatMap((i) => new Array<number>(count(i, me)).fill(100 * i + me)),
      );
    },
  });
  return [
    {
      name: 'all_gather',
      run: async () => {
        const recv = new Float32Array(P);
        await comm.allGather(new Float32Array([me + 1]), recv, o);
        return expectEq(
          recv,
          ranks.map((i) => i + 1),
        );
      },
    },
    {
      name: 'all_gather_v',
      run: async () => {
        const counts = ranks.map((i) => 1 + (i % 2));
        const recv = new Float32Array(sum(counts));
        await comm.allGatherV(new Float32Array(counts[me]!).fill(me + 1), recv, counts, o);
        return expectEq(
          recv,
          ranks.flatMap((i) => new Array<number>(counts[i]!).fill(i + 1)),
        );
      },
    },
    {
      name: 'reduce_scatter',
      run: async () => {
        const send = Float32Array.from(ranks, (i) => (me + 1) * (i + 1));
        const recv = new Float32Array(1);
        await comm.reduceScatter(send, recv, { op: 'sum' }, o);
        return expectEq(recv, [(sum(ranks) + P) * (me + 1)]);
      },
    },
    reduceCheck('all_reduce', { op: 'sum' }, (P * (P + 1)) / 2),
    reduceCheck('all_reduce(avg)', { op: 'avg' }, (P + 1) / 2),
    reduceCheck('all_reduce(max)', { op: 'max' }, P),
    reduceCheck('all_reduce(premul_sum)', { op: 'premul_sum', factor: 0.5 }, (P * (P + 1)) / 4),
    a2a('all_to_all_v(equal)', () => 1),
    a2a('all_to_all_v(uneven)', (i, j) => 1 + ((i + j) % 2)),
    {
      name: 'broadcast',
      run: async () => {
        const b = new Float32Array([me === P - 1 ? 42 : -1]);
        await comm.broadcast(b, P - 1, o);
        return expectEq(b, [42]);
      },
    },
    { name: 'barrier', run: async () => (await comm.barrier(o), null) },
    {
      name: 'split',
      run: async () => {
        const sub = await comm.split(me % 2, -me, `${comm.name}.probe`);
        const want = ranks
          .filter((r) => r % 2 === me % 2)
          .reverse()
          .map((r) => comm.ranks[r]!);
        const bad =
          sub.ranks.join(',') !== want.join(',')
            ? `wrong result: split gave ranks [${sub.ranks.join(',')}], expected [${want.join(',')}]`
            : null;
        await sub.free();
        return bad;
      },
    },
  ];
}

export async function probe(comm: Communicator, opts: ProbeOptions = {}): Promise<ProbeReport> {
  const timeoutMs = opts.timeoutMs ?? 2000;
  const results: ProbeResult[] = [];
  let brokenBy: string | undefined;
  for (const c of checks(comm, timeoutMs)) {
    if (brokenBy) {
      results.push({ name: c.name, ok: false, reason: `not probed: the group failed earlier (${brokenBy})`, ms: 0 });
      continue;
    }
    const t0 = performance.now();
    try {
      const wrong = await c.run();
      results.push({ name: c.name, ok: wrong === null, reason: wrong ?? undefined, ms: performance.now() - t0 });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      results.push({ name: c.name, ok: false, reason: msg, ms: performance.now() - t0 });
      // 'unsupported' and 'invalid' are refused locally, identically on every rank; anything else may leave the
      // group in an unknown state (a timed-out MPI call cannot be cancelled), so stop calling it.
      if (!(err instanceof CollectiveError) || (err.kind !== 'unsupported' && err.kind !== 'invalid'))
        brokenBy = `${c.name}: ${msg.split('\n', 1)[0]}`;
    }
  }
  if (!brokenBy) await agree(comm, results, timeoutMs);
  return { capabilities: toCapabilities(comm, results), results };
}

/**
 * A wrong result may show on some ranks only; sum the failure flags so every rank reports the same capabilities.
 * Uses all_reduce(sum), or all_gather if that is what failed.
 */
async function agree(comm: Communicator, results: ProbeResult[], timeoutMs: number): Promise<void> {
  const flags = Int32Array.from(results, (r) => (r.ok ? 0 : 1));
  const viaReduce = results.find((r) => r.name === 'all_reduce')?.ok;
  const viaGather = results.find((r) => r.name === 'all_gather')?.ok;
  let failedSomewhere: (i: number) => boolean;
  try {
    if (viaReduce) {
      await comm.allReduce(flags, { op: 'sum' }, { timeoutMs, tag: 'probe agreement' });
      failedSomewhere = (i) => flags[i]! > 0;
    } else if (viaGather) {
      const all = new Int32Array(flags.length * comm.size);
      await comm.allGather(flags, all, { timeoutMs, tag: 'probe agreement' });
      failedSomewhere = (i) =>
        Array.from({ length: comm.size }, (_, r) => all[r * flags.length + i]!).some((f) => f > 0);
    } else return;
  } catch {
    return;
  }
  results.forEach((r, i) => {
    if (r.ok && failedSomewhere(i)) {
      r.ok = false;
      r.reason = 'worked here but gave a wrong result or failed on another rank of the group';
    }
  });
}

function toCapabilities(comm: Communicator, results: readonly ProbeResult[]): Capabilities {
  const ok = (name: string) => results.find((r) => r.name === name)?.ok ?? false;
  const claimed = comm.capabilities;
  // On a single-node group the probe cannot see multi-node behaviour, and on a multi-node group a 'single-node'
  // claim is refused by design: in both cases keep the claim rather than under- or over-state it.
  const premul = ok('all_reduce(premul_sum)')
    ? comm.multiNode
      ? 'yes'
      : claimed.premulSum
    : claimed.premulSum === 'single-node' && comm.multiNode
      ? 'single-node'
      : 'no';
  return {
    allGather: ok('all_gather'),
    allGatherV: ok('all_gather_v'),
    reduceScatter: ok('reduce_scatter'),
    allReduce: ok('all_reduce'),
    allToAllV: ok('all_to_all_v(equal)') ? (ok('all_to_all_v(uneven)') ? 'yes' : 'equal-count') : 'no',
    premulSum: premul,
    avg: ok('all_reduce(avg)'),
    broadcast: ok('broadcast'),
    barrier: ok('barrier'),
    split: ok('split'),
  };
}

/** The report as plan.txt lists it: one line per collective, and the capabilities that follow. */
export function formatProbeReport(r: ProbeReport, backend: string): string {
  const lines = [
    `start-up probe on ${backend} (every collective once; the plan above uses what worked, narrowed by the profile):`,
  ];
  const w = Math.max(...r.results.map((x) => x.name.length));
  for (const x of r.results)
    lines.push(
      `  ${x.name.padEnd(w)}  ${x.ok ? `ok ${x.ms.toFixed(1)} ms` : `FAILED: ${(x.reason ?? 'failed').split('\n', 1)[0]}`}`,
    );
  const caps = Object.entries(r.capabilities).map(([k, v]) => `${k}=${v}`);
  lines.push(`  measured: ${caps.join(' ')}`);
  return lines.join('\n');
}
