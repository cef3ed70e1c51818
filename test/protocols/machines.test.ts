// Model-based tests of the protocol machines: in the matrix strategy × AC mode × reshard policy (× HSDP ×
// gradient reduction), every state and every defined transition is reached by some replayed path, and
// invariants hold at every step. Plus direct runs with stage fakes checking the order of stages.
import { describe, expect, it } from 'vitest';
import { createActor, createMachine, fromCallback, fromPromise, spawnChild, waitFor } from 'xstate';
import { moeLayerMachine, MOE_STAGES } from '../../src/protocols/moe-layer.machine.ts';
import { fsdpUnitMachine, reshardAfterForward } from '../../src/protocols/fsdp-unit.machine.ts';
import { isCheckpointed, trainStepMachine, type AcMode } from '../../src/protocols/train-step.machine.ts';
import { optimizerMachine } from '../../src/protocols/optimizer.machine.ts';
import { routerMachine } from '../../src/protocols/router.machine.ts';
import { expertMachine, moeLayerId } from '../../src/protocols/expert.machine.ts';
import { DISPATCH_STRATEGIES } from '../../src/protocols/strategies.ts';
import { allStateIds, coverPaths, definedTransitions, doneEvents, type Coverage } from './graph-coverage.ts';
import { trainStepInput } from './train-step-input.ts';

function merge(into: Coverage, c: Coverage) {
  c.transitions.forEach((t) => into.transitions.add(t));
  c.states.forEach((s) => into.states.add(s));
  into.paths += c.paths;
}
const empty = (): Coverage => ({ transitions: new Set(), states: new Set(), paths: 0 });
function expectFull(machine: any, cov: Coverage) {
  const missingT = [...definedTransitions(machine)].filter((t) => !cov.transitions.has(t));
  const missingS = [...allStateIds(machine)].filter((s) => !cov.states.has(s));
  expect(missingT).toEqual([]);
  expect(missingS).toEqual([]);
}

const FSDP_STAGES = ['unshard', 'reshard', 'reduceScatter', 'divide', 'allReduceReplicas'] as const;
const STEP_STAGES = [
  'forwardEmbed',
  'forwardBlock',
  'loss',
  'recomputeBlock',
  'backwardBlock',
  'backwardEmbed',
  'reduceGrads',
] as const;
/** The answers the train step waits for from its optimizer and router children (it sends them the requests); the
 * optimizer's end is its done notice (it has answered STEPPED and finished). */
const STEP_ANSWERS = [
  { type: 'GRADS_ZEROED' },
  { type: 'CLIPPED', gradNorm: 1.5 },
  { type: 'BIAS_UPDATED' },
  { type: 'xstate.done.actor.optimizer', actorId: 'optimizer' },
  { type: 'OPTIMIZER_FAILED', error: 'norm all_reduce failed' },
  { type: 'ROUTER_FAILED', error: 'counts all_reduce failed' },
];
const never: any = fromPromise(() => new Promise<never>(() => {}));
/** The train step with router and optimizer children whose stages never settle: only the path's answers move it. */
const stepWithSilentChildren = trainStepMachine.provide({
  actors: {
    routerActor: routerMachine.provide({ actors: { route: never, routerGrad: never, biasUpdate: never } }),
    optimizerActor: optimizerMachine.provide({ actors: { zeroGrad: never, clip: never, step: never } }),
  },
} as any);
const AC_MODES: AcMode[] = [
  { mode: 'none' },
  { mode: 'selective', every: 2 },
  { mode: 'full' },
  { mode: 'selective', op: true },
];

/** The router's answers to a moe layer's requests (the layer sends ROUTE / ROUTER_GRAD with replyTo: self). */
const ROUTER_ANSWERS = [
  { type: 'ROUTED', handle: { layer: 1, microbatch: 0 } },
  { type: 'ROUTER_GRAD_DONE', handle: { layer: 1, microbatch: 0 } },
  { type: 'ROUTER_FAILED', error: 'router stage failed' },
];

/**
 * A moe layer beside a router (systemId `router`) in one system, as the expert shard runs it; the router's stages
 * log and settle at once.
 */
function layerWithRouter(strategy: string, stages: Record<string, any>, log: string[]) {
  const routerStage = (n: string) =>
    fromPromise(
      async ({ input }: { input: { handle: { layer: number } } }) => void log.push(`${n}@${input.handle.layer}`),
    );
  return createMachine({
    entry: [
      spawnChild(
        routerMachine.provide({
          actors: { route: routerStage('route'), routerGrad: routerStage('routerGrad') } as any,
        }),
        {
          id: 'router',
          systemId: 'router',
          input: { step: 1 },
        },
      ),
      spawnChild(moeLayerMachine.provide({ actors: stages } as any), {
        id: 'layer',
        input: { layer: 1, microbatch: 0, step: 1, strategy },
      }),
    ],
  });
}

/** An asker's reply address: records every answer it receives. */
function inbox() {
  const got: any[] = [];
  const ref = createActor(fromCallback(({ receive }) => receive((e) => void got.push(e)))).start();
  return { ref, got };
}

describe('moe-layer machine', () => {
  it('covers every state and transition for every strategy', () => {
    const cov = empty();
    // Alone, the layer has no router: its requests go nowhere and the path's answers move it.
    const alone = moeLayerMachine.provide({ actions: { askRoute: () => {}, askRouterGrad: () => {} } });
    const asker = inbox().ref;
    for (const strategy of ['local', ...DISPATCH_STRATEGIES] as const) {
      const events = () => [
        { type: 'FORWARD', pass: 'forward', replyTo: asker },
        { type: 'FORWARD', pass: 'recompute', replyTo: asker },
        { type: 'BACKWARD', replyTo: asker },
        { type: 'DROP' },
        { type: 'ABORT' },
        ...ROUTER_ANSWERS,
        ...doneEvents(MOE_STAGES),
      ];
      merge(
        cov,
        coverPaths(alone, { layer: 1, microbatch: 0, step: 1, strategy }, MOE_STAGES, events, {
          serialize: (s) => JSON.stringify([s.value, s.context.pass]),
          check: (s) => {
            // EP = 1 never enters the counts exchange: it has no peers to exchange with.
            if (strategy === 'local') expect(s.matches({ forward: 'exchangeCounts' })).toBe(false);
          },
        }),
      );
    }
    expectFull(moeLayerMachine, cov);
  });

  it('runs the stages in protocol order, recompute included, asking the router for route and routerGrad', async () => {
    for (const strategy of ['local', 'a2a'] as const) {
      const log: string[] = [];
      const stages = Object.fromEntries(
        MOE_STAGES.map((n) => [
          n,
          fromPromise(async ({ input }: { input: { pass: string } }) => void log.push(`${n}/${input.pass}`)),
        ]),
      );
      const root = createActor(layerWithRouter(strategy, stages, log));
      root.start();
      const a = root.getSnapshot().children.layer as any;
      // Each pass is answered to its own asker, once, when the pass is done.
      const [f, r, b] = [inbox(), inbox(), inbox()];
      a.send({ type: 'FORWARD', pass: 'forward', replyTo: f.ref });
      await waitFor(a, (s: any) => s.value === 'forwardDone');
      a.send({ type: 'FORWARD', pass: 'recompute', replyTo: r.ref });
      await waitFor(a, (s: any) => s.value === 'forwardDone');
      expect(b.got).toEqual([]);
      a.send({ type: 'BACKWARD', replyTo: b.ref });
      await waitFor(a, (s: any) => s.status === 'done');
      const at = { layer: 1, microbatch: 0 };
      expect([f.got, r.got, b.got]).toEqual([
        [{ type: 'FORWARD_DONE', ...at }],
        [{ type: 'FORWARD_DONE', ...at }],
        [{ type: 'BACKWARD_DONE', ...at }],
      ]);
      const fwd =
        strategy === 'local'
          ? ['dispatch', 'compute', 'combine']
          : ['exchangeCounts', 'dispatch', 'compute', 'combine'];
      expect(log).toEqual([
        'route@1',
        ...fwd.map((s) => `${s}/forward`),
        'route@1',
        ...fwd.map((s) => `${s}/recompute`),
        ...['combineGrad', 'computeGrad', 'dispatchGrad'].map((s) => `${s}/recompute`),
        'routerGrad@1',
      ]);
      root.stop();
    }
  });

  it('stops in failed with the stage error; ABORT ends it in aborted; both run its release (root exit)', async () => {
    const released: string[] = [];
    const failing = Object.fromEntries(
      MOE_STAGES.map((n) => [
        n,
        fromPromise(async () => {
          if (n === 'dispatch') throw new Error('peer 2 died');
        }),
      ]),
    );
    const machine = moeLayerMachine.provide({
      actors: failing as any,
      actions: { releaseLayer: ({ context }) => void released.push(`${context.layer}`) },
    });
    const a = createActor(machine, { input: { layer: 3, microbatch: 0, step: 1, strategy: 'a2a' } });
    // A layer alone has no router in its system: ROUTE fails it with a message naming the missing actor.
    a.start();
    const asker = inbox();
    a.send({ type: 'FORWARD', pass: 'forward', replyTo: asker.ref });
    const s = await waitFor(a, (x) => x.status === 'done');
    expect(s.value).toBe('failed');
    expect(s.context.error).toMatch(/no router actor/);
    expect(released).toEqual(['3']);
    // The failure is answered to the asker, so nobody waits on a failed layer.
    expect(asker.got).toEqual([{ type: 'MOE_FAILED', layer: 3, microbatch: 0, error: s.context.error }]);

    // A layer aborted mid-forward (waiting for its route) answers its asker too.
    const waiting = machine.provide({ actions: { askRoute: () => {} } });
    const b = createActor(waiting, { input: { layer: 4, microbatch: 1, step: 1, strategy: 'a2a' } });
    b.start();
    const asker2 = inbox();
    b.send({ type: 'FORWARD', pass: 'forward', replyTo: asker2.ref });
    b.send({ type: 'ABORT' });
    expect(b.getSnapshot().value).toBe('aborted');
    expect(released).toEqual(['3', '4']);
    await Promise.resolve();
    expect(asker2.got).toEqual([
      { type: 'MOE_FAILED', layer: 4, microbatch: 1, error: expect.stringMatching(/aborted/) },
    ]);
    // Stopping alone runs no exit action (XState v5): the reason ABORT exists.
    const c = createActor(machine, { input: { layer: 5, microbatch: 0, step: 1, strategy: 'a2a' } });
    c.start();
    c.stop();
    expect(released).toEqual(['3', '4']);
  });
});

describe('fsdp-unit machine', () => {
  it('covers every state and transition across reshard policy × HSDP × gradient reduction', () => {
    const cov = empty();
    for (const reshard of [true, false])
      for (const hsdp of [true, false])
        for (const gradReduce of ['sum', 'sum-divide', 'premul-sum'] as const) {
          const events = () => [
            { type: 'UNSHARD', purpose: 'forward', microbatch: 0, step: 1 },
            { type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1 },
            { type: 'FORWARD_DONE' },
            { type: 'GRADS_READY' },
            ...doneEvents(FSDP_STAGES),
          ];
          merge(
            cov,
            coverPaths(
              fsdpUnitMachine,
              { unit: 'layers.1', reshardAfterForward: reshard, hsdp, gradReduce },
              FSDP_STAGES,
              events,
              {
                serialize: (s) => JSON.stringify([s.value, s.context.purpose, s.context.queued?.purpose ?? null]),
                check: (s) => {
                  if (!hsdp) expect(s.matches({ reducing: 'allReduceReplicas' })).toBe(false);
                  if (gradReduce !== 'sum-divide') expect(s.matches({ reducing: 'divide' })).toBe(false);
                  // Without reshard-after-forward, params are only freed after their gradients were reduced.
                  if (!reshard && s.matches('resharding')) expect(s.context.purpose).toBe('backward');
                },
              },
            ),
          );
        }
    expectFull(fsdpUnitMachine, cov);
  });

  it('follows torchtitan’s reshard policies, the output unit only under "always"', () => {
    expect(reshardAfterForward('default', { isOutput: false })).toBe(true);
    expect(reshardAfterForward('default', { isOutput: true })).toBe(false);
    expect(reshardAfterForward('always', { isOutput: true })).toBe(true);
    expect(reshardAfterForward('never', { isOutput: false })).toBe(false);
    expect(reshardAfterForward('default', { isOutput: false }, true)).toBe(false);
  });

  it('gathers again for backward only when it resharded after forward', async () => {
    for (const reshard of [true, false]) {
      const log: string[] = [];
      const actors = Object.fromEntries(FSDP_STAGES.map((n) => [n, fromPromise(async () => void log.push(n))]));
      const a = createActor(fsdpUnitMachine.provide({ actors } as any), {
        input: { unit: 'layers.0', reshardAfterForward: reshard, hsdp: true, gradReduce: 'sum-divide' },
      });
      a.start();
      a.send({ type: 'UNSHARD', purpose: 'forward', microbatch: 0, step: 1 });
      await waitFor(a, (s) => s.matches('unsharded'));
      a.send({ type: 'FORWARD_DONE' });
      await waitFor(a, (s) => s.matches('resharded') || s.matches('kept'));
      a.send({ type: 'UNSHARD', purpose: 'backward', microbatch: 0, step: 1 });
      await waitFor(a, (s) => s.matches('grads'));
      a.send({ type: 'GRADS_READY' });
      await waitFor(a, (s) => s.matches('resharded'));
      expect(log).toEqual(
        reshard
          ? ['unshard', 'reshard', 'unshard', 'reduceScatter', 'allReduceReplicas', 'divide', 'reshard']
          : ['unshard', 'reduceScatter', 'allReduceReplicas', 'divide', 'reshard'],
      );
    }
  });
});

describe('train-step machine', () => {
  it('covers every state and transition across AC mode × microbatches × layers × bias update', () => {
    const cov = empty();
    for (const ac of AC_MODES)
      for (const microbatches of [1, 2])
        for (const nLayers of [0, 1, 3])
          for (const [biasUpdate, gradOnly] of [
            [true, false],
            [false, false],
            [true, true],
          ] as const) {
            // ABORT is one root transition: one configuration covers it (every path more would only cost time).
            const abort = microbatches === 1 && nLayers === 1 && biasUpdate && !gradOnly ? [{ type: 'ABORT' }] : [];
            const events = () => [{ type: 'START' }, ...doneEvents(STEP_STAGES), ...STEP_ANSWERS, ...abort];
            merge(
              cov,
              coverPaths(
                stepWithSilentChildren,
                {
                  step: 1,
                  nLayers,
                  microbatches,
                  ac,
                  biasUpdate,
                  gradOnly,
                  units: [],
                  strategy: 'local',
                  lr: 1e-3,
                  maxNorm: 1,
                },
                STEP_STAGES,
                events,
                {
                  serialize: (s) => JSON.stringify([s.value, s.context.layer, s.context.microbatch]),
                  check: (s) => {
                    expect(s.context.microbatch).toBeLessThan(microbatches);
                    expect(s.context.layer).toBeGreaterThanOrEqual(0);
                    expect(s.context.layer).toBeLessThan(Math.max(1, nLayers));
                    if (s.matches({ microbatch: { backward: 'recompute' } }))
                      expect(isCheckpointed(s.context.layer, ac)).toBe(true);
                    if (!biasUpdate || gradOnly) expect(s.matches('biasUpdate')).toBe(false);
                    if (gradOnly) expect(s.matches('clip') || s.matches('optimizer')).toBe(false);
                    if (s.matches('biasUpdate') || s.matches('optimizer')) expect(s.context.gradNorm).toBe(1.5);
                  },
                },
              ),
            );
          }
    expectFull(trainStepMachine, cov);
  });

  it('recomputes exactly the checkpointed blocks, in reverse order, per microbatch', async () => {
    for (const ac of AC_MODES) {
      const log: string[] = [];
      const actors = Object.fromEntries(
        STEP_STAGES.map((n) => [
          n,
          fromPromise(
            async ({ input }: { input: { layer: number; microbatch: number } }) =>
              void log.push(`${n}:${input.microbatch}:${input.layer}`),
          ),
        ]),
      );
      const asked = (n: string) =>
        fromPromise(async ({ input }: { input: { lr?: number; maxNorm?: number } }) => {
          log.push(
            n +
              (input.lr !== undefined ? `:lr=${input.lr}` : '') +
              (input.maxNorm !== undefined ? `:maxNorm=${input.maxNorm}` : ''),
          );
          return n === 'clip' ? 2.5 : null;
        });
      const children = {
        routerActor: routerMachine.provide({
          actors: { route: never, routerGrad: never, biasUpdate: asked('biasUpdate') },
        } as any),
        optimizerActor: optimizerMachine.provide({
          actors: { zeroGrad: asked('zeroGrad'), clip: asked('clip'), step: asked('optimizerStep') },
        } as any),
      };
      const a = createActor(trainStepMachine.provide({ actors: { ...actors, ...children } } as any), {
        input: trainStepInput({ nLayers: 4, microbatches: 2, ac, biasUpdate: true, lr: 0.25, maxNorm: 0.5 }),
      });
      a.start();
      a.send({ type: 'START' });
      const end = await waitFor(a, (s) => s.status === 'done');
      expect(end.value).toBe('done');
      expect(end.context.gradNorm).toBe(2.5);
      const expected: string[] = ['zeroGrad'];
      for (let mb = 0; mb < 2; mb++) {
        expected.push(`forwardEmbed:${mb}:0`);
        for (let l = 0; l < 4; l++) expected.push(`forwardBlock:${mb}:${l}`);
        expected.push(`loss:${mb}:3`);
        for (let l = 3; l >= 0; l--) {
          if (isCheckpointed(l, ac)) expected.push(`recomputeBlock:${mb}:${l}`);
          expected.push(`backwardBlock:${mb}:${l}`);
        }
        expected.push(`backwardEmbed:${mb}:0`);
      }
      expected.push('reduceGrads:1:0', 'clip:maxNorm=0.5', 'biasUpdate', 'optimizerStep:lr=0.25');
      expect(log).toEqual(expected);
    }
  });

  it('a failed stage, or ABORT, ends the MoE layers in flight before the children stop, so their exit actions release', async () => {
    for (const how of ['stage fails', 'ABORT'] as const) {
      const released: string[] = [];
      const moeLayer = moeLayerMachine.provide({
        actors: Object.fromEntries(MOE_STAGES.map((n) => [n, fromPromise(async () => {})])) as any,
        actions: { releaseLayer: ({ context }) => void released.push(`${context.layer}/${context.microbatch}`) },
      });
      let secondForwarded: () => void = () => {};
      const bothForwarded = new Promise<void>((r) => (secondForwarded = r));
      const step = trainStepMachine.provide({
        actors: {
          routerActor: routerMachine.provide({ actors: { route: fromPromise(async () => {}) } } as any),
          optimizerActor: optimizerMachine.provide({ actors: { zeroGrad: fromPromise(async () => {}) } } as any),
          expertActor: expertMachine.provide({ actors: { moeLayer } }),
          forwardEmbed: fromPromise(async () => {}),
          // Each block hands its MoE layer to the expert shard and waits for its forward; block 1 then fails.
          forwardBlock: fromPromise(async ({ input, system }: { input: { layer: number }; system: any }) => {
            const expert = system.get('expert');
            const asker = inbox();
            expert.send({ type: 'FORWARD', layer: input.layer, microbatch: 0, pass: 'forward', replyTo: asker.ref });
            await waitFor(
              expert.getSnapshot().children[moeLayerId(input.layer, 0)],
              (x: any) => x.value === 'forwardDone',
            );
            if (input.layer === 1) {
              secondForwarded();
              if (how === 'stage fails') throw new Error('block 1 failed');
              await new Promise(() => {}); // the watchdog's case: the step is given up from outside
            }
          }),
        } as any,
      });
      const a = createActor(step, {
        input: trainStepInput({ nLayers: 3, lr: 0.1 }),
      });
      a.start();
      a.send({ type: 'START' });
      if (how === 'ABORT') {
        await bothForwarded;
        a.send({ type: 'ABORT' });
      }
      const end = await waitFor(a, (x) => x.status === 'done');
      expect(end.value).toBe('failed');
      expect(end.context.error).toBe(how === 'ABORT' ? 'step aborted' : 'block 1 failed');
      expect(released.sort()).toEqual(['0/0', '1/0']);
    }
  });

  it('selects blocks as torchtitan’s selective AC does', () => {
    const sel = (every: number) => [0, 1, 2, 3, 4, 5].filter((l) => isCheckpointed(l, { mode: 'selective', every }));
    expect(sel(2)).toEqual([1, 3, 5]);
    expect(sel(3)).toEqual([2, 5]);
    expect(sel(0)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(sel(1)).toEqual([0, 1, 2, 3, 4, 5]);
  });
});
