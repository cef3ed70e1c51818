// The machines of the rank's other actors — router, optimizer, expert shard — and the FSDP unit's queued UNSHARD:
// model-based coverage (every state and transition reached) and direct runs with stage fakes checking the
// requests each answers and the order of its stages.
import { describe, expect, it } from 'vitest';
import { createActor, createMachine, fromPromise, waitFor } from 'xstate';
import { routerMachine } from '../../src/protocols/router.machine.ts';
import { optimizerMachine, type OptimizerStageInput } from '../../src/protocols/optimizer.machine.ts';
import { expertMachine, moeLayerId } from '../../src/protocols/expert.machine.ts';
import { moeLayerMachine, MOE_STAGES } from '../../src/protocols/moe-layer.machine.ts';
import { fsdpUnitMachine, type FsdpStageInput } from '../../src/protocols/fsdp-unit.machine.ts';
import { allStateIds, coverPaths, definedTransitions, doneEvents } from './graph-coverage.ts';

function expectFull(machine: any, cov: { transitions: Set<string>; states: Set<string> }) {
  expect([...definedTransitions(machine)].filter((t) => !cov.transitions.has(t))).toEqual([]);
  expect([...allStateIds(machine)].filter((s) => !cov.states.has(s))).toEqual([]);
}

const handle = { layer: 2, microbatch: 1 };

describe('router machine', () => {
  const STAGES = ['route', 'routerGrad', 'biasUpdate'] as const;
  it('covers every state and transition', () => {
    const events = () => [
      { type: 'ROUTE', handle },
      { type: 'ROUTER_GRAD', handle },
      { type: 'BIAS_UPDATE' },
      ...doneEvents(STAGES),
    ];
    expectFull(
      routerMachine,
      coverPaths(routerMachine, { step: 1 }, STAGES, events, { serialize: (s) => JSON.stringify(s.value) }),
    );
  });

  it('answers each request with an emitted event naming its handle, and reports a failed stage', async () => {
    const log: string[] = [];
    const actors = Object.fromEntries(
      STAGES.map((n) => [
        n,
        fromPromise(async ({ input }: { input: { handle: unknown; state: string } }) => {
          if (n === 'biasUpdate') throw new Error('all_reduce timed out');
          log.push(`${n}@${input.state}`);
          return input.handle;
        }),
      ]),
    );
    const a = createActor(routerMachine.provide({ actors } as any), { input: { step: 3 } });
    const emitted: unknown[] = [];
    for (const t of ['ROUTED', 'ROUTER_GRAD_DONE', 'ROUTER_FAILED'] as const) a.on(t, (e) => void emitted.push(e));
    a.start();
    a.send({ type: 'ROUTE', handle });
    await waitFor(a, (s) => s.matches('idle') && emitted.length === 1);
    a.send({ type: 'ROUTER_GRAD', handle });
    await waitFor(a, (s) => s.matches('idle') && emitted.length === 2);
    a.send({ type: 'BIAS_UPDATE' });
    await waitFor(a, (s) => s.status === 'done');
    expect(log).toEqual(['route@routing', 'routerGrad@routerGrad']);
    expect(emitted).toEqual([
      { type: 'ROUTED', handle },
      { type: 'ROUTER_GRAD_DONE', handle },
      { type: 'ROUTER_FAILED', error: 'all_reduce timed out' },
    ]);
  });
});

describe('optimizer machine', () => {
  const STAGES = ['zeroGrad', 'clip', 'step'] as const;
  it('covers every state and transition', () => {
    const events = () => [
      { type: 'ZERO_GRAD' },
      { type: 'CLIP', maxNorm: 1 },
      { type: 'STEP', lr: 0.1 },
      ...doneEvents(STAGES),
    ];
    expectFull(
      optimizerMachine,
      coverPaths(optimizerMachine, { step: 1 }, STAGES, events, { serialize: (s) => JSON.stringify(s.value) }),
    );
  });

  it('zeroes, clips (answering with the norm), then steps with the given LR; STEP before CLIP is not taken', async () => {
    const log: string[] = [];
    const a = createActor(
      optimizerMachine.provide({
        actors: {
          zeroGrad: fromPromise<void, OptimizerStageInput>(async () => void log.push('zero')),
          clip: fromPromise<number, OptimizerStageInput>(async ({ input }) => (log.push(`clip ${input.maxNorm}`), 2.5)),
          step: fromPromise<void, OptimizerStageInput>(async ({ input }) => void log.push(`step ${input.lr}`)),
        },
      }),
      { input: { step: 1 } },
    );
    const emitted: unknown[] = [];
    for (const t of ['GRADS_ZEROED', 'CLIPPED', 'STEPPED'] as const) a.on(t, (e) => void emitted.push(e));
    a.start();
    a.send({ type: 'ZERO_GRAD' });
    await waitFor(a, (s) => s.matches('idle') && emitted.length === 1);
    a.send({ type: 'STEP', lr: 9 });
    expect(a.getSnapshot().value).toBe('idle');
    a.send({ type: 'CLIP', maxNorm: 0.5 });
    await waitFor(a, (s) => s.matches('clipped'));
    a.send({ type: 'STEP', lr: 0.01 });
    await waitFor(a, (s) => s.status === 'done');
    expect(log).toEqual(['zero', 'clip 0.5', 'step 0.01']);
    expect(emitted).toEqual([{ type: 'GRADS_ZEROED' }, { type: 'CLIPPED', gradNorm: 2.5 }, { type: 'STEPPED' }]);
    expect(a.getSnapshot().context.gradNorm).toBe(2.5);
  });

  it('sends each answer to the replyTo actor of its request, failures included (no parent needed)', async () => {
    const got: { type: string }[] = [];
    const asker = createActor(createMachine({ on: { '*': { actions: ({ event }) => void got.push(event) } } }));
    asker.start();
    const a = createActor(
      optimizerMachine.provide({
        actors: {
          zeroGrad: fromPromise<void, OptimizerStageInput>(async () => {}),
          clip: fromPromise<number, OptimizerStageInput>(async () => 0.75),
          step: fromPromise<void, OptimizerStageInput>(async () => {
            throw new Error('moments missing');
          }),
        },
      }),
      { input: { step: 1 } },
    );
    a.start();
    a.send({ type: 'ZERO_GRAD', replyTo: asker });
    await waitFor(a, (s) => s.matches('idle') && got.length === 1);
    a.send({ type: 'CLIP', maxNorm: 1, replyTo: asker });
    await waitFor(a, (s) => s.matches('clipped'));
    a.send({ type: 'STEP', lr: 0.1, replyTo: asker });
    await waitFor(a, (s) => s.status === 'done');
    expect(got).toEqual([
      { type: 'GRADS_ZEROED' },
      { type: 'CLIPPED', gradNorm: 0.75 },
      { type: 'OPTIMIZER_FAILED', error: 'moments missing' },
    ]);
    asker.stop();
  });
});

describe('expert machine', () => {
  it('runs one moe-layer child per layer × microbatch: spawned by FORWARD, given the recompute and BACKWARD, gone after', async () => {
    const log: string[] = [];
    const actors = Object.fromEntries(
      MOE_STAGES.map((n) => [
        n,
        fromPromise(
          async ({ input }: { input: { layer: number; microbatch: number; pass: string } }) =>
            void log.push(`${input.layer}/${input.microbatch} ${n}/${input.pass}`),
        ),
      ]),
    );
    const a = createActor(expertMachine.provide({ actors: { moeLayer: moeLayerMachine.provide({ actors } as any) } }), {
      input: { step: 1, strategy: 'local' },
    });
    a.start();
    a.send({ type: 'FORWARD', layer: 1, microbatch: 0, pass: 'forward' });
    a.send({ type: 'FORWARD', layer: 1, microbatch: 1, pass: 'forward' });
    const c0 = a.getSnapshot().children[moeLayerId(1, 0)] as any;
    const c1 = a.getSnapshot().children[moeLayerId(1, 1)] as any;
    await waitFor(c0, (s: any) => s.matches('forwardDone'));
    await waitFor(c1, (s: any) => s.matches('forwardDone'));
    a.send({ type: 'FORWARD', layer: 1, microbatch: 0, pass: 'recompute' });
    expect(a.getSnapshot().children[moeLayerId(1, 0)]).toBe(c0);
    await waitFor(c0, (s: any) => s.matches('forwardDone'));
    a.send({ type: 'BACKWARD', layer: 1, microbatch: 0 });
    await waitFor(c0, (s: any) => s.status === 'done');
    expect(Object.keys(a.getSnapshot().children)).toEqual([moeLayerId(1, 1)]);
    const mb0 = log.filter((l) => l.startsWith('1/0 '));
    expect(mb0).toEqual([
      ...['route', 'dispatch', 'compute', 'combine'].map((s) => `1/0 ${s}/forward`),
      ...['route', 'dispatch', 'compute', 'combine'].map((s) => `1/0 ${s}/recompute`),
      ...['combineGrad', 'computeGrad', 'dispatchGrad', 'routerGrad'].map((s) => `1/0 ${s}/recompute`),
    ]);
    a.stop();
  });
});

describe('fsdp-unit machine: UNSHARD while resharding', () => {
  it('is queued and taken when the reshard is done, so the caller need not wait first', async () => {
    const log: string[] = [];
    let finishReshard: () => void = () => {};
    const a = createActor(
      fsdpUnitMachine.provide({
        actors: {
          unshard: fromPromise<void, FsdpStageInput>(async () => void log.push('unshard')),
          reshard: fromPromise<void, FsdpStageInput>(
            () => new Promise<void>((r) => (finishReshard = () => (log.push('reshard'), r()))),
          ),
          reduceScatter: fromPromise<void, FsdpStageInput>(async () => void log.push('reduceScatter')),
          divide: fromPromise<void, FsdpStageInput>(async () => {}),
          allReduceReplicas: fromPromise<void, FsdpStageInput>(async () => {}),
        },
      }),
      { input: { unit: 'output', reshardAfterForward: true, hsdp: false, gradReduce: 'sum' } },
    );
    a.start();
    a.send({ type: 'UNSHARD', purpose: 'forward', microbatch: 0, step: 1 });
    await waitFor(a, (s) => s.matches('unsharded'));
    a.send({ type: 'FORWARD_DONE' });
    expect(a.getSnapshot().value).toBe('resharding');
    a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1 });
    expect(a.getSnapshot().context.queued).toEqual({ purpose: 'backward', microbatch: 0, step: 1 });
    finishReshard();
    const s = await waitFor(a, (x) => x.matches('grads'));
    expect(s.context.queued).toBe(null);
    expect(s.context.purpose).toBe('backward');
    expect(log).toEqual(['unshard', 'reshard', 'unshard']);
    a.stop();
  });
});
