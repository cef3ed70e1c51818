// docs/architecture.md's diagram of one rank's actor system against the code: the block is what
// actorSystemMermaid draws from src/protocols/actor-system.ts, and that table is what a real step does — the root
// spawns exactly the listed actors, every listed event is one its receiver's machine accepts, and every
// collective of the step (4 inproc ranks, HSDP 2×2 with EP 2, SUM-then-divide so every reduction state runs) comes
// from a listed (machine, state) on a listed group, and every listed one occurs.
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { AnyStateMachine } from 'xstate';
import { createInprocWorld, runRanks } from '../../src/comm/inproc/launch.ts';
import { RankHost, type RankJob } from '../../src/actors/rank-host.ts';
import { shardBatch } from '../../src/actors/programs/distributed-run.ts';
import { ACTORS, COLLECTIVES, MESSAGES, STAGE_REPLY, actorSystemMermaid } from '../../src/protocols/actor-system.ts';
import { expertMachine } from '../../src/protocols/expert.machine.ts';
import { FSDP_ANSWERS, fsdpUnitMachine } from '../../src/protocols/fsdp-unit.machine.ts';
import { MOE_ANSWERS, moeLayerMachine } from '../../src/protocols/moe-layer.machine.ts';
import { optimizerMachine } from '../../src/protocols/optimizer.machine.ts';
import { routerMachine } from '../../src/protocols/router.machine.ts';
import { STRATEGIES } from '../../src/protocols/strategies.ts';
import { trainStepMachine } from '../../src/protocols/train-step.machine.ts';
import { trainStepInput } from '../protocols/train-step-input.ts';
import { distributedCaseOf, syntheticBatch } from '../models/fixtures.ts';
import { definedTransitions } from '../protocols/graph-coverage.ts';

const DOC = fileURLToPath(new URL('../../docs/architecture.md', import.meta.url));
const MACHINES: Record<string, AnyStateMachine> = {
  'train-step': trainStepMachine,
  'fsdp-unit': fsdpUnitMachine,
  expert: expertMachine,
  'moe-layer': moeLayerMachine,
  router: routerMachine,
  optimizer: optimizerMachine,
};

describe('one rank’s actor system (docs/architecture.md)', () => {
  it('the diagram in docs/architecture.md is the one drawn from src/protocols/actor-system.ts', () => {
    const doc = readFileSync(DOC, 'utf8');
    const m = /<!-- actor-system:begin[^>]*-->\n```mermaid\n([\s\S]*?)```\n<!-- actor-system:end -->/.exec(doc);
    expect(m, 'the actor-system block in docs/architecture.md').not.toBeNull();
    expect(m![1]).toBe(actorSystemMermaid());
  });

  it('every event of the table is one its receiver’s machine accepts', () => {
    for (const msg of MESSAGES) {
      const to = ACTORS.find((a) => a.id === msg.to)!;
      const accepted = new Set(
        [...definedTransitions(MACHINES[to.machine]!)].map((t) => t.split(' --')[1]!.split('--> ')[0]),
      );
      for (const e of msg.events) expect(accepted.has(e), `${msg.from} → ${msg.to}: ${e}`).toBe(true);
    }
  });

  it('every answer sent to a replyTo is one the asking machine accepts', () => {
    const replies = MESSAGES.filter((m) => m.answer.startsWith('to replyTo:'));
    expect(replies.length).toBeGreaterThan(0);
    for (const msg of replies) {
      const from = ACTORS.find((a) => a.id === msg.from)!;
      const accepted = new Set(
        [...definedTransitions(MACHINES[from.machine]!)].map((t) => t.split(' --')[1]!.split('--> ')[0]),
      );
      const answers = msg.answer
        .slice('to replyTo:'.length)
        .split(';')[0]!
        .split('/')
        .map((e) => e.trim());
      for (const e of answers) expect(accepted.has(e), `${msg.to} → ${msg.from}: ${e}`).toBe(true);
    }
  });

  it('the answers to a stage’s reply inbox are the ones the answering machine sends', () => {
    const replies = MESSAGES.filter((m) => m.answer.startsWith(STAGE_REPLY));
    // What each answering machine sends (the machine tests see these arrive at the asker): the moe-layer child
    // answers the expert's askers itself.
    const sent: Record<string, readonly string[]> = { 'moe:<layer>/<mb>': MOE_ANSWERS, 'fsdp:<unit>': FSDP_ANSWERS };
    expect(replies.map((m) => `${m.from} → ${m.answerFrom ?? m.to}`)).toEqual([
      'trainStep → fsdp:<unit>',
      'trainStep → moe:<layer>/<mb>',
    ]);
    for (const m of replies) {
      const answers = m.answer
        .slice(STAGE_REPLY.length)
        .split('/')
        .map((e) => e.trim());
      expect(answers).toEqual([...sent[m.answerFrom ?? m.to]!]);
    }
  });

  it('a real step spawns the listed actors and issues exactly the listed collectives, each from its state', async () => {
    const fx = distributedCaseOf('dsv3_groups_softmax_train');
    const seen = new Map<string, Set<string>>();
    const world = createInprocWorld(4, {
      seed: 1,
      observer: {
        onStart: (c, e, site) => {
          const k = `${site?.machine ?? '(no call site)'}/${site?.state ?? e.tag}/${e.op}`;
          if (!seen.has(k)) seen.set(k, new Set());
          seen.get(k)!.add(c.name);
        },
      },
    });
    const job: RankJob = {
      model: fx.model,
      degrees: { dp_replicate: 2, dp_shard: 2, ep: 2 },
      dispatch: 'allgather-rs',
      gradReduce: 'sum-divide',
      divideFactor: 2,
      reshard: 'default',
      ac: { mode: 'none' },
      adamw: fx.adamw,
      schedule: fx.schedule,
      maxNorm: 1,
      seed: 0,
      weights: fx.weights,
    };
    const batch = { ...syntheticBatch(fx.model.args.vocab_size, 8, 16, 1), B: 8, S: 16, microbatches: 1 };
    const r = await runRanks(
      world,
      async (ctx) => {
        const host = await RankHost.create(ctx.world, job);
        try {
          const { index, degree } = host.mesh.batch;
          // The mesh was built before this point; only the step's collectives are compared.
          seen.clear();
          await host.step(shardBatch(batch, index, degree));
          return 1;
        } finally {
          await host.close();
        }
      },
      null,
    );
    expect(
      r.outcomes.every((o) => o.ok),
      JSON.stringify(r.outcomes),
    ).toBe(true);

    const want = new Map<string, Set<string>>();
    for (const c of COLLECTIVES) want.set(`${c.machine}/${c.state}/${c.op}`, new Set(c.groups));
    for (const [phase, calls] of Object.entries(STRATEGIES['allgather-rs'].phases))
      for (const c of calls) want.set(`moeLayer/${phase}/${c.op}`, new Set(['ep']));
    for (const [k, groups] of seen) {
      expect(want.has(k), `collective ${k} on ${[...groups].join(',')} is not in src/protocols/actor-system.ts`).toBe(
        true,
      );
      for (const g of groups) expect(want.get(k)!.has(g), `${k} on group ${g}`).toBe(true);
    }
    for (const k of want.keys()) expect(seen.has(k), `listed collective ${k} was not issued`).toBe(true);
  });

  it('the train-step root spawns router, expert, optimizer and one fsdp:<unit> per unit under their systemIds', async () => {
    const { createActor } = await import('xstate');
    const units = ['tok_embeddings', 'layers.0', 'output'].map((unit) => ({
      unit,
      reshardAfterForward: true,
      hsdp: false,
      gradReduce: 'sum' as const,
    }));
    const a = createActor(trainStepMachine, {
      input: trainStepInput({ units }),
    });
    a.start();
    const ids = ['router', 'expert', 'optimizer', ...units.map((u) => `fsdp:${u.unit}`)];
    for (const id of ids) expect(a.system.get(id), id).toBeDefined();
    expect(Object.keys(a.getSnapshot().children).sort()).toEqual([...ids].sort());
    const listed = ACTORS.filter((x) => x.id !== 'trainStep' && !x.id.startsWith('moe:')).map((x) =>
      x.id.replace('<unit>', ''),
    );
    expect(
      ids
        .map((id) => (id.startsWith('fsdp:') ? 'fsdp:' : id))
        .filter((v, i, all) => all.indexOf(v) === i)
        .sort(),
    ).toEqual(listed.sort());
    a.stop();
  });
});
