// The machines of the rank's other actors — router, optimizer, expert shard — and the FSDP unit's queued UNSHARD:
// model-based coverage (every state and transition reached) and direct runs with stage fakes checking the
// requests each answers and the order of its stages.
import { describe, expect, it } from 'vitest';
import { createActor, createMachine, fromCallback, fromPromise, spawnChild, waitFor } from 'xstate';
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

/** An actor that keeps every event it is sent (the asker a request's replyTo names). */
function asker(name: string, got: string[]) {
  const a = createActor(
    createMachine({ on: { '*': { actions: ({ event }) => void got.push(`${name} ${JSON.stringify(event)}`) } } }),
  );
  a.start();
  return a;
}

describe('router machine', () => {
  const STAGES = ['route', 'routerGrad', 'biasUpdate'] as const;
  it('covers every state and transition', () => {
    const to = asker('x', []);
    // The queue is unbounded; two waiting requests reach every state and transition (and keep the graph finite).
    const events = (snap: { context: { queue: unknown[] } }) => [
      ...(snap.context.queue.length < 2
        ? [
            { type: 'ROUTE', handle, replyTo: to },
            { type: 'ROUTER_GRAD', handle, replyTo: to },
            { type: 'BIAS_UPDATE', replyTo: to },
          ]
        : []),
      ...doneEvents(STAGES),
    ];
    expectFull(
      routerMachine,
      coverPaths(routerMachine, { step: 1 }, STAGES, events, {
        serialize: (s) => JSON.stringify([s.value, s.context.queue.map((r: { type: string }) => r.type)]),
      }),
    );
    to.stop();
  });

  it('queues requests in flight (layers × microbatches) and answers each to its own replyTo, in arrival order', async () => {
    const log: string[] = [];
    const got: string[] = [];
    // Each stage settles only when the test says so: the later requests arrive while the first is served.
    const pending: (() => void)[] = [];
    const actors = Object.fromEntries(
      STAGES.map((n) => [
        n,
        fromPromise(
          ({ input }: { input: { handle: { layer: number; microbatch: number } | null; state: string } }) =>
            new Promise<void>((resolve) =>
              pending.push(() => {
                log.push(`${input.state} ${input.handle ? `${input.handle.layer}/${input.handle.microbatch}` : '-'}`);
                resolve();
              }),
            ),
        ),
      ]),
    );
    const a = createActor(routerMachine.provide({ actors } as any), { input: { step: 3 } });
    a.start();
    const l1m0 = asker('l1m0', got);
    const l1m1 = asker('l1m1', got);
    const l2m0 = asker('l2m0', got);
    const step = asker('step', got);
    a.send({ type: 'ROUTE', handle: { layer: 1, microbatch: 0 }, replyTo: l1m0 });
    a.send({ type: 'ROUTE', handle: { layer: 1, microbatch: 1 }, replyTo: l1m1 });
    a.send({ type: 'ROUTER_GRAD', handle: { layer: 2, microbatch: 0 }, replyTo: l2m0 });
    a.send({ type: 'BIAS_UPDATE', replyTo: step });
    expect(a.getSnapshot().context.queue.map((r) => r.type)).toEqual(['ROUTE', 'ROUTE', 'ROUTER_GRAD', 'BIAS_UPDATE']);
    for (let served = 0; served < 4; served++) {
      await waitFor(a, () => pending.length > served);
      pending[served]!();
      await waitFor(a, (s) => s.context.queue.length === 3 - served);
    }
    expect(log).toEqual(['routing 1/0', 'routing 1/1', 'routerGrad 2/0', 'biasUpdate -']);
    expect(got).toEqual([
      'l1m0 {"type":"ROUTED","handle":{"layer":1,"microbatch":0}}',
      'l1m1 {"type":"ROUTED","handle":{"layer":1,"microbatch":1}}',
      'l2m0 {"type":"ROUTER_GRAD_DONE","handle":{"layer":2,"microbatch":0}}',
      'step {"type":"BIAS_UPDATED"}',
    ]);
    expect(a.getSnapshot().value).toEqual({ serving: 'idle' });
    a.stop();
  });

  it('a failed request fails the router and answers every queued asker with the failure', async () => {
    const got: string[] = [];
    let fail: (e: Error) => void = () => {};
    const a = createActor(
      routerMachine.provide({
        actors: {
          route: fromPromise(() => new Promise<void>((_, reject) => (fail = reject))),
          routerGrad: fromPromise(async () => {}),
          biasUpdate: fromPromise(async () => {}),
        },
      } as any),
      { input: { step: 1 } },
    );
    a.start();
    a.send({ type: 'ROUTE', handle: { layer: 0, microbatch: 0 }, replyTo: asker('first', got) });
    a.send({ type: 'BIAS_UPDATE', replyTo: asker('queued', got) });
    fail(new Error('all_reduce timed out'));
    const s = await waitFor(a, (x) => x.status === 'done');
    expect(s.value).toBe('failed');
    expect(got).toEqual([
      'first {"type":"ROUTER_FAILED","error":"all_reduce timed out"}',
      'queued {"type":"ROUTER_FAILED","error":"all_reduce timed out"}',
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
    const routerStage = (n: string) =>
      fromPromise(
        async ({ input }: { input: { handle: { layer: number; microbatch: number } } }) =>
          void log.push(`${input.handle.layer}/${input.handle.microbatch} ${n}`),
      );
    // The expert beside the router its layers ask, in one system (as the train-step root spawns them).
    const root = createActor(
      createMachine({
        entry: [
          spawnChild(
            routerMachine.provide({
              actors: { route: routerStage('route'), routerGrad: routerStage('routerGrad') },
            } as any),
            { id: 'router', systemId: 'router', input: { step: 1 } },
          ),
          spawnChild(expertMachine.provide({ actors: { moeLayer: moeLayerMachine.provide({ actors } as any) } }), {
            id: 'expert',
            input: { step: 1, strategy: 'local' },
          }),
        ],
      }),
    );
    root.start();
    const a = root.getSnapshot().children.expert as any;
    // The asker's reply address (the block stage's inbox in the runtime): every answer lands here.
    const answers: any[] = [];
    const replyTo = createActor(fromCallback(({ receive }) => receive((e) => void answers.push(e)))).start();
    a.send({ type: 'FORWARD', layer: 1, microbatch: 0, pass: 'forward', replyTo });
    a.send({ type: 'FORWARD', layer: 1, microbatch: 1, pass: 'forward', replyTo });
    const c0 = a.getSnapshot().children[moeLayerId(1, 0)] as any;
    const c1 = a.getSnapshot().children[moeLayerId(1, 1)] as any;
    await waitFor(c0, (s: any) => s.matches('forwardDone'));
    await waitFor(c1, (s: any) => s.matches('forwardDone'));
    a.send({ type: 'FORWARD', layer: 1, microbatch: 0, pass: 'recompute', replyTo });
    expect(a.getSnapshot().children[moeLayerId(1, 0)]).toBe(c0);
    await waitFor(c0, (s: any) => s.matches('forwardDone'));
    a.send({ type: 'BACKWARD', layer: 1, microbatch: 0, replyTo });
    await waitFor(c0, (s: any) => s.status === 'done');
    // A backward with no forward before it has no machine to run it: the asker gets a failure, not silence.
    a.send({ type: 'BACKWARD', layer: 2, microbatch: 0, replyTo });
    await Promise.resolve();
    const at = (type: string, microbatch: number) => ({ type, layer: 1, microbatch });
    expect(answers).toEqual([
      at('FORWARD_DONE', 0),
      at('FORWARD_DONE', 1),
      at('FORWARD_DONE', 0),
      at('BACKWARD_DONE', 0),
      { type: 'MOE_FAILED', layer: 2, microbatch: 0, error: expect.stringMatching(/backward without a forward/) },
    ]);
    expect(Object.keys(a.getSnapshot().children)).toEqual([moeLayerId(1, 1)]);
    const mb0 = log.filter((l) => l.startsWith('1/0 '));
    expect(mb0).toEqual([
      '1/0 route',
      ...['dispatch', 'compute', 'combine'].map((s) => `1/0 ${s}/forward`),
      '1/0 route',
      ...['dispatch', 'compute', 'combine'].map((s) => `1/0 ${s}/recompute`),
      ...['combineGrad', 'computeGrad', 'dispatchGrad'].map((s) => `1/0 ${s}/recompute`),
      '1/0 routerGrad',
    ]);
    root.stop();
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
    const asker = inbox();
    a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1, replyTo: asker.ref });
    expect(a.getSnapshot().context.queued).toEqual({ purpose: 'backward', microbatch: 0, step: 1, replyTo: asker.ref });
    finishReshard();
    const s = await waitFor(a, (x) => x.matches('grads'));
    expect(s.context.queued).toBe(null);
    expect(s.context.purpose).toBe('backward');
    expect(log).toEqual(['unshard', 'reshard', 'unshard']);
    expect(asker.got).toEqual([{ type: 'UNSHARDED', unit: 'output', purpose: 'backward', microbatch: 0 }]);
    a.stop();
  });

  const unit = (reduceScatter: () => Promise<void>) =>
    createActor(
      fsdpUnitMachine.provide({
        actors: {
          unshard: fromPromise<void, FsdpStageInput>(async () => {}),
          reshard: fromPromise<void, FsdpStageInput>(async () => {}),
          reduceScatter: fromPromise<void, FsdpStageInput>(reduceScatter),
          divide: fromPromise<void, FsdpStageInput>(async () => {}),
          allReduceReplicas: fromPromise<void, FsdpStageInput>(async () => {}),
        },
      }),
      { input: { unit: 'layers.0', reshardAfterForward: true, hsdp: false, gradReduce: 'sum' } },
    );

  it('holding or reducing grads, it queues the next microbatch’s UNSHARD and answers it after REDUCED', async () => {
    let finishReduce: () => void = () => {};
    const a = unit(() => new Promise<void>((r) => (finishReduce = r)));
    a.start();
    const [b0, again, reduce, f1] = [inbox(), inbox(), inbox(), inbox()];
    a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1, replyTo: b0.ref });
    await waitFor(a, (x) => x.matches('grads'));
    // The backward after a recompute asks again: answered at once, nothing gathered or queued.
    a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1, replyTo: again.ref });
    expect(again.got).toEqual([{ type: 'UNSHARDED', unit: 'layers.0', purpose: 'backward', microbatch: 0 }]);
    expect(a.getSnapshot().context.queued).toBe(null);
    // Next microbatch's forward asks while the unit still holds grads (its reduction's turn has not come) …
    a.send({ type: 'UNSHARD', purpose: 'forward', microbatch: 1, step: 1, replyTo: f1.ref });
    a.send({ type: 'GRADS_READY', replyTo: reduce.ref });
    expect(a.getSnapshot().matches({ reducing: 'reduceScatter' })).toBe(true);
    expect([f1.got, reduce.got]).toEqual([[], []]);
    finishReduce();
    const s = await waitFor(a, (x) => x.matches('unsharded'));
    expect(s.context.microbatch).toBe(1);
    // … and is answered once the reduction and its reshard are done.
    expect(reduce.got).toEqual([{ type: 'REDUCED', unit: 'layers.0' }]);
    expect(f1.got).toEqual([{ type: 'UNSHARDED', unit: 'layers.0', purpose: 'forward', microbatch: 1 }]);
    a.stop();
  });

  it('a failed reduction answers FSDP_FAILED to the reduction’s asker and to the queued UNSHARD’s', async () => {
    const a = unit(async () => {
      throw new Error('reduce_scatter: peer 3 died');
    });
    a.start();
    const [reduce, f1] = [inbox(), inbox()];
    a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1 });
    await waitFor(a, (x) => x.matches('grads'));
    a.send({ type: 'GRADS_READY', replyTo: reduce.ref });
    // Asked while reducing: queued too, then answered with the failure.
    a.send({ type: 'UNSHARD', purpose: 'forward', microbatch: 1, step: 1, replyTo: f1.ref });
    await waitFor(a, (x) => x.status === 'done');
    const failed = { type: 'FSDP_FAILED', unit: 'layers.0', error: expect.stringMatching(/peer 3 died/) };
    expect([reduce.got, f1.got]).toEqual([[failed], [failed]]);
  });
});

/** An asker's reply address: records every answer it receives. */
function inbox() {
  const got: any[] = [];
  const ref = createActor(fromCallback(({ receive }) => receive((e) => void got.push(e)))).start();
  return { ref, got };
}
