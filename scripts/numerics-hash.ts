// The numerics fingerprint of the distributed runtime, for refactors that must keep every number bit-identical.
// Runs the inproc matrix of test/actors/distributed-parity.test.ts (both model families, every EP strategy,
// FSDP/EP/HSDP layouts, every AC mode, gradient accumulation) plus the gradient reductions (sum, sum-divide,
// premul-sum), reshard policies and grad-only mode, and hashes the exact bits of losses, grad norms, LRs and the
// full tensors rank 0 gathers. Prints one line per case and the total; equal totals before and after a change
// mean no number moved. A second, informative hash covers the trace attribution (which actor, layer and
// microbatch issued each collective, which states were entered): it is order-insensitive, timestamps excluded.
//
//   npx tsx scripts/numerics-hash.ts [--trace] [--only <substring>]

import { createHash } from 'node:crypto';
import type { AcMode } from '../src/models/model/ac.ts';
import type { RankJob } from '../src/actors/rank-host.ts';
import type { DistributedRunArgs, DistributedRunResult } from '../src/actors/programs/distributed-run.ts';
import type { GradReduce, ReshardPolicy } from '../src/protocols/fsdp-unit.machine.ts';
import type { MoeStrategy } from '../src/protocols/strategies.ts';
import type { TraceEvent } from '../src/protocols/events.ts';
import {
  AC_FULL as FULL,
  AC_NONE as NONE,
  AC_SEL as SEL,
  distributedCaseOf,
  PARITY_LAYOUTS as LAYOUTS,
  launchDistributedRun,
  syntheticBatch,
} from '../test/models/fixtures.ts';

interface Case {
  layout: string;
  dispatch: MoeStrategy;
  ac: AcMode;
  ga: number;
  mode: 'train' | 'grad';
  gradReduce?: GradReduce;
  divideFactor?: number;
  reshard?: ReshardPolicy;
}

const CASES: Case[] = [
  { layout: 'fsdp2', dispatch: 'a2a', ac: NONE, ga: 1, mode: 'train' },
  { layout: 'hsdp2x1', dispatch: 'a2a', ac: SEL, ga: 2, mode: 'train' },
  { layout: 'fsdp4', dispatch: 'a2a', ac: FULL, ga: 2, mode: 'train' },
  { layout: 'fsdp2-ep2', dispatch: 'a2a', ac: SEL, ga: 1, mode: 'train' },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-padded', ac: FULL, ga: 2, mode: 'train' },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-rs', ac: NONE, ga: 2, mode: 'train' },
  { layout: 'fsdp4-ep2', dispatch: 'a2a', ac: FULL, ga: 2, mode: 'train' },
  { layout: 'fsdp4-ep2', dispatch: 'allgather-padded', ac: NONE, ga: 1, mode: 'train' },
  { layout: 'fsdp4-ep2', dispatch: 'allgather-rs', ac: SEL, ga: 2, mode: 'train' },
  { layout: 'fsdp4-ep4', dispatch: 'a2a', ac: NONE, ga: 2, mode: 'train' },
  { layout: 'fsdp4-ep4', dispatch: 'allgather-padded', ac: SEL, ga: 1, mode: 'train' },
  { layout: 'fsdp4-ep4', dispatch: 'allgather-rs', ac: FULL, ga: 1, mode: 'train' },
  { layout: 'hsdp2x2-ep2', dispatch: 'a2a', ac: SEL, ga: 1, mode: 'train' },
  { layout: 'hsdp2x2-ep2', dispatch: 'allgather-padded', ac: NONE, ga: 2, mode: 'train' },
  { layout: 'hsdp2x2-ep2', dispatch: 'allgather-rs', ac: FULL, ga: 2, mode: 'train' },
  // grad-only mode, every strategy
  { layout: 'fsdp4-ep4', dispatch: 'a2a', ac: NONE, ga: 1, mode: 'grad' },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-padded', ac: SEL, ga: 2, mode: 'grad' },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-rs', ac: FULL, ga: 1, mode: 'grad' },
  // gradient reductions
  {
    layout: 'hsdp2x2-ep2',
    dispatch: 'allgather-rs',
    ac: NONE,
    ga: 1,
    mode: 'grad',
    gradReduce: 'sum-divide',
    divideFactor: 4,
  },
  {
    layout: 'hsdp2x2-ep2',
    dispatch: 'allgather-rs',
    ac: NONE,
    ga: 1,
    mode: 'grad',
    gradReduce: 'premul-sum',
    divideFactor: 4,
  },
  { layout: 'fsdp4-ep2', dispatch: 'a2a', ac: SEL, ga: 2, mode: 'train', gradReduce: 'sum-divide', divideFactor: 4 },
  {
    layout: 'fsdp4-ep2',
    dispatch: 'allgather-padded',
    ac: NONE,
    ga: 1,
    mode: 'train',
    gradReduce: 'premul-sum',
    divideFactor: 4,
  },
  // reshard policies
  { layout: 'fsdp2-ep2', dispatch: 'a2a', ac: NONE, ga: 2, mode: 'train', reshard: 'always' },
  { layout: 'fsdp2-ep2', dispatch: 'allgather-rs', ac: SEL, ga: 2, mode: 'train', reshard: 'never' },
];

const acName = (ac: AcMode) => (ac.mode === 'selective' ? ('every' in ac ? `sel${ac.every}` : 'selop') : ac.mode);

function caseName(fixture: string, c: Case): string {
  return [
    fixture,
    c.mode,
    c.layout,
    c.dispatch,
    `ac=${acName(c.ac)}`,
    `ga=${c.ga}`,
    c.gradReduce ? `${c.gradReduce}/${c.divideFactor}` : '',
    c.reshard ? `reshard=${c.reshard}` : '',
  ]
    .filter(Boolean)
    .join(' ');
}

function numericsHash(r: DistributedRunResult): string {
  const h = createHash('sha256');
  const f64 = (xs: number[]) => h.update(Buffer.from(Float64Array.from(xs).buffer));
  f64(r.losses);
  f64(r.gradNorms);
  f64(r.lrs);
  for (const name of Object.keys(r.tensors!).sort()) {
    const t = r.tensors![name]!;
    h.update(`${name}:${t.shape.join('x')}:`);
    h.update(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex').slice(0, 16);
}

function traceHash(events: TraceEvent[][]): string {
  const lines: string[] = [];
  for (const evs of events) {
    for (const e of evs) {
      if (e.kind === 'collective')
        lines.push(
          `C ${e.rank} ${e.actor} ${e.op} ${e.group} ${e.seq} ${e.phase} ${e.tag} ${e.step} ${e.layer} ${e.microbatch} ${e.inNelems} ${e.outNelems}`,
        );
      else if (e.kind === 'state')
        lines.push(
          `S ${e.rank} ${e.actor} ${e.machine} ${e.state} ${e.category} ${e.phase} ${e.step} ${e.layer} ${e.microbatch}`,
        );
    }
  }
  lines.sort();
  return createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16);
}

async function main() {
  const argv = process.argv.slice(2);
  const trace = argv.includes('--trace');
  const only = argv.includes('--only') ? argv[argv.indexOf('--only') + 1]! : null;
  const total = createHash('sha256');
  const totalTrace = createHash('sha256');
  const t0 = performance.now();
  for (const fixture of ['llama4_shared2_train', 'dsv3_groups_softmax_train']) {
    const fx = distributedCaseOf(fixture);
    const B = 8;
    const S = 16;
    const batch = { ...syntheticBatch(fx.model.args.vocab_size, B, S, 11), B, S };
    for (const c of CASES) {
      const name = caseName(fixture, c);
      if (only && !name.includes(only)) continue;
      const layout = LAYOUTS[c.layout]!;
      const job: RankJob = {
        model: fx.model,
        degrees: layout.degrees,
        dispatch: c.dispatch,
        gradReduce: c.gradReduce ?? 'sum',
        divideFactor: c.divideFactor ?? 1,
        reshard: c.reshard ?? 'default',
        ac: c.ac,
        adamw: fx.adamw,
        schedule: fx.schedule,
        maxNorm: fx.maxNorm,
        seed: 0,
        weights: fx.weights,
      };
      const args: DistributedRunArgs = { job, ...batch, microbatches: c.ga, mode: c.mode, steps: 3, trace };
      const values = await launchDistributedRun(args, layout.ranks, name, { timeoutMs: 30_000 });
      const rank0 = values[0]!;
      const nh = numericsHash(rank0);
      total.update(`${name}=${nh}\n`);
      let line = `${nh} ${name}`;
      if (trace) {
        const th = traceHash(values.map((v) => v.events ?? []));
        totalTrace.update(`${name}=${th}\n`);
        line += `  trace ${th}`;
      }
      console.log(line);
    }
  }
  console.log(
    `TOTAL numerics ${total.digest('hex').slice(0, 16)}${trace ? `  trace ${totalTrace.digest('hex').slice(0, 16)}` : ''}  (${((performance.now() - t0) / 1000).toFixed(0)} s)`,
  );
}

main().catch((e) => {
  console.error(e instanceof Error ? e.stack : e);
  process.exit(1);
});
