// Each actor of a rank alone, driven by events over a real inproc communicator (2 ranks in this process):
//   - expert shard, per strategy: one MoE layer forward and backward through the expert + router actors (EP 2)
//     gives the outputs and input gradients of the same layer on one rank holding every expert; the collectives
//     it issues, per moe-layer state, are exactly those protocols/strategies.ts lists for that phase (the
//     planner's byte model stands on that table), forward and backward;
//   - router: ROUTE fills the step record with the layer's own routing; BIAS_UPDATE all_reduces the counts over
//     the group and moves every rank's bias by torchtitan's rule on the summed counts;
//   - optimizer: ZERO_GRAD, CLIP (norm over both ranks' shards) and STEP (AdamW's first step, written out here);
//   - FSDP unit: unshard gathers the full unit, reshard frees it, reduce sums both ranks' gradients into the shard.
import { describe, expect, it } from 'vitest';
import { createActor, createMachine, setup, spawnChild, waitFor } from 'xstate';
import type { CallSite, Communicator } from '../../src/comm/communicator.ts';
import { createInprocWorld } from '../../src/comm/inproc/launch.ts';
import { Model } from '../../src/models/model/model.ts';
import { loadWeights } from '../../src/models/model/weights.ts';
import { expertBiasUpdate } from '../../src/models/moe/load-balance.ts';
import { readSafetensors } from '../../src/models/safetensors.ts';
import { Allocator } from '../../src/tensor/allocator.ts';
import { getKernels } from '../../src/tensor/kernels.ts';
import { ExpertShard } from '../../src/actors/expert/shard.ts';
import { startExpertSystem } from '../../src/actors/expert/alone.ts';
import { Optimizer } from '../../src/actors/optimizer/optimizer.ts';
import { FsdpUnitShard, provideFsdpUnit } from '../../src/actors/fsdp/shard.ts';
import type { StepFailure } from '../../src/actors/wait.ts';
import { MOE_PHASES, STRATEGIES, DISPATCH_STRATEGIES, type MoeStrategy } from '../../src/protocols/strategies.ts';
import { distributedCaseOf, relMaxDiff } from '../models/fixtures.ts';

const CASE = distributedCaseOf('dsv3_groups_softmax_train');

function rand(n: number, seed: number, scale: number): Float32Array {
  let x = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = ((x >>> 8) / (1 << 24) - 0.5) * scale;
  }
  return out;
}

function buildModel(ep: number, rank: number): Model {
  const E = CASE.model.args.moe_args!.num_experts as number;
  const model = Model.build(CASE.model, {
    kernels: getKernels(),
    experts: ep > 1 ? { start: (rank * E) / ep, count: E / ep } : undefined,
  });
  loadWeights(model, readSafetensors(CASE.weights));
  return model;
}

/** One MoE layer's forward + backward on `model` through the expert and router actors; returns out and dx. */
async function runLayer(
  model: Model,
  ep: Communicator,
  strategy: MoeStrategy,
  x: Float32Array,
  dOut: Float32Array,
  N: number,
) {
  const failure: StepFailure = { first: undefined };
  const layer = model.moeLayers()[0]!;
  const shard = new ExpertShard(model.rt, ep, strategy, failure);
  const sys = startExpertSystem(shard, { layers: () => model.moeLayers(), ac: { mode: 'none' }, loss: ep, failure });
  try {
    const out = Float32Array.from(await shard.forward(sys.expert, layer, x, N, 0, 'forward'));
    const dx = Float32Array.from(await shard.backward(sys.expert, layer.layerId, 0, dOut));
    return { out, dx };
  } finally {
    sys.stop();
  }
}

describe('expert shard alone, per strategy (EP 2)', () => {
  const N = 12;
  const D = buildModel(1, 0).moeLayers()[0]!.D;
  const xs = [rand(N * D, 11, 2), rand(N * D, 12, 2)];
  const dOuts = [rand(N * D, 21, 1e-2), rand(N * D, 22, 1e-2)];
  // One rank with every expert, both ranks' tokens in one batch: the reference.
  const ref = (() => {
    const w = createInprocWorld(1);
    return runLayer(
      buildModel(1, 0),
      w.comms[0]!,
      'local',
      Float32Array.from([...xs[0]!, ...xs[1]!]),
      Float32Array.from([...dOuts[0]!, ...dOuts[1]!]),
      2 * N,
    );
  })();

  for (const strategy of DISPATCH_STRATEGIES) {
    it(`${strategy}: the layer's outputs and input grads match one rank; each state issues the collectives strategies.ts lists`, async () => {
      const w = createInprocWorld(2, { seed: 3 });
      const issued: { rank: number; state: string; op: string }[] = [];
      w.comms.forEach((c, r) =>
        c.observe({
          onStart: (_c, e, site?: CallSite) => void issued.push({ rank: r, state: site?.state ?? '(none)', op: e.op }),
        }),
      );
      const got = await Promise.all(
        w.comms.map((c, r) => runLayer(buildModel(2, r), c, strategy, xs[r]!, dOuts[r]!, N)),
      );
      const want = await ref;
      for (let r = 0; r < 2; r++) {
        expect(relMaxDiff(got[r]!.out, want.out.subarray(r * N * D, (r + 1) * N * D)), `rank ${r} out`).toBeLessThan(
          1e-5,
        );
        expect(relMaxDiff(got[r]!.dx, want.dx.subarray(r * N * D, (r + 1) * N * D)), `rank ${r} dx`).toBeLessThan(1e-5);
        const mine = issued.filter((i) => i.rank === r);
        for (const phase of MOE_PHASES) {
          expect(
            mine.filter((i) => i.state === phase).map((i) => i.op),
            `${strategy} rank ${r} ${phase}`,
          ).toEqual(STRATEGIES[strategy].phases[phase].map((c) => c.op));
        }
        // Nothing outside the table: every collective came from a phase state, in protocol order.
        const order = mine.map((i) => i.state).filter((s, i, a) => s !== a[i - 1]);
        expect(order).toEqual(MOE_PHASES.filter((p) => STRATEGIES[strategy].phases[p].length > 0));
      }
    });
  }
});

describe('expert shard alone: a failed step', () => {
  it('ABORT ends the running layers, whose exit actions give every buffer back to the pool (stop alone gives none)', async () => {
    const w = createInprocWorld(1);
    const model = buildModel(1, 0);
    const layer = model.moeLayers()[0]!;
    const N = 8;
    const x = rand(N * layer.D, 41, 2);
    const run = async (abort: boolean) => {
      const failure: StepFailure = { first: undefined };
      const shard = new ExpertShard(model.rt, w.comms[0]!, 'local', failure);
      const sys = startExpertSystem(shard, {
        layers: () => model.moeLayers(),
        ac: { mode: 'none' },
        loss: w.comms[0]!,
        failure,
      });
      const before = model.rt.pool.liveCount;
      model.rt.pool.release(await shard.forward(sys.expert, layer, x, N, 0, 'forward'));
      const held = model.rt.pool.liveCount - before;
      if (abort) sys.stop();
      else sys.root.stop(); // what a stop without ABORT leaves behind
      return { held, left: model.rt.pool.liveCount - before };
    };
    const stopped = await run(false);
    expect(stopped.held).toBeGreaterThan(0);
    expect(stopped.left).toBe(stopped.held);
    const aborted = await run(true);
    expect(aborted.held).toBeGreaterThan(0);
    expect(aborted.left).toBe(0);
  });
});

describe('router alone', () => {
  it('ROUTE fills the step record with the layer’s routing; BIAS_UPDATE sums counts over the group and moves the bias', async () => {
    const w = createInprocWorld(2, { seed: 5 });
    const models = [buildModel(2, 0), buildModel(2, 1)];
    const N = 8;
    const results = await Promise.all(
      w.comms.map(async (comm, r) => {
        const model = models[r]!;
        const layer = model.moeLayers()[0]!;
        const x = rand(N * layer.D, 31 + r, 2);
        const failure: StepFailure = { first: undefined };
        const shard = new ExpertShard(model.rt, comm, 'a2a', failure);
        const sys = startExpertSystem(shard, {
          layers: () => model.moeLayers(),
          ac: { mode: 'none' },
          loss: comm,
          failure,
        });
        try {
          // The record the router works on is the expert shard's; drive ROUTE alone by a forward's first state.
          const direct = layer.route(model.rt, x, N).route;
          const directIdx = Int32Array.from(direct.topIdx);
          layer.buffers.tokensPerExpert.fill(0);
          const out = await shard.forward(sys.expert, layer, x, N, 0, 'forward');
          model.rt.pool.release(out);
          const counts = Float32Array.from(layer.buffers.tokensPerExpert);
          const bias = Float32Array.from(layer.buffers.expertBias!);
          const routed = Int32Array.from(shard.record({ layer: layer.layerId, microbatch: 0 }).route!.topIdx);
          const router = sys.expert.system.get('router')!;
          await new Promise<void>((resolve, reject) => {
            const asker = createActor(
              createMachine({
                on: {
                  BIAS_UPDATED: { actions: () => resolve() },
                  ROUTER_FAILED: {
                    actions: ({ event }) => reject(new Error((event as unknown as { error: string }).error)),
                  },
                },
              }),
            ).start();
            router.send({ type: 'BIAS_UPDATE', replyTo: asker });
          });
          return {
            counts,
            bias,
            after: Float32Array.from(layer.buffers.expertBias!),
            routed,
            directIdx,
            zeroed: layer.buffers.tokensPerExpert.every((v) => v === 0),
            coeff: layer.spec.args.load_balance_coeff!,
          };
        } finally {
          sys.stop();
        }
      }),
    );
    const sum = results[0]!.counts.map((v, e) => v + results[1]!.counts[e]!);
    for (const r of results) {
      expect(r.routed).toEqual(r.directIdx);
      const want = Float32Array.from(r.bias);
      expertBiasUpdate(sum, want, r.coeff);
      expect(r.after).toEqual(want);
      expect(r.zeroed).toBe(true);
    }
    expect(results[0]!.after).toEqual(results[1]!.after);
  });
});

describe('optimizer alone', () => {
  it('zeroes, clips by the norm over both ranks’ shards and steps AdamW (first step written out)', async () => {
    const w = createInprocWorld(2, { seed: 9 });
    const k = getKernels();
    const cfg = { lr: 0.01, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    const res = await Promise.all(
      w.comms.map(async (comm, r) => {
        const alloc = new Allocator();
        const data = rand(16, 40 + r, 2);
        const grad = new Float32Array(16);
        const shard = { id: 'u', numel: 16, data, grad, isExperts: false, zeroGradShard: () => grad.fill(0) };
        const opt = new Optimizer(
          [shard],
          cfg,
          { totalSteps: 10, warmupSteps: 0, decayRatio: null, decayType: 'linear', minLrFactor: 0 } as never,
          k,
          alloc,
        );
        const failure: StepFailure = { first: undefined };
        const a = createActor(opt.machine(comm, failure), { input: { step: 1 } });
        const answers: unknown[] = [];
        for (const t of ['GRADS_ZEROED', 'CLIPPED', 'STEPPED'] as const) a.on(t, (e) => void answers.push(e));
        a.start();
        grad.fill(5);
        a.send({ type: 'ZERO_GRAD' });
        await waitFor(a, (s) => s.matches('idle') && answers.length === 1);
        const zeroed = grad.every((v) => v === 0);
        grad.set(rand(16, 50 + r, 4));
        const g0 = Float32Array.from(grad);
        const p0 = Float32Array.from(data);
        a.send({ type: 'CLIP', maxNorm: 0.5 });
        await waitFor(a, (s) => s.matches('clipped'));
        const clipped = Float32Array.from(grad);
        a.send({ type: 'STEP', lr: cfg.lr });
        await waitFor(a, (s) => s.status === 'done');
        return {
          zeroed,
          g0,
          p0,
          clipped,
          p1: Float32Array.from(data),
          norm: a.getSnapshot().context.gradNorm!,
          answers,
        };
      }),
    );
    let sq = 0;
    for (const r of res) for (const g of r.g0) sq += g * g;
    const norm = Math.sqrt(sq);
    for (const r of res) {
      expect(r.zeroed).toBe(true);
      expect(r.norm).toBeCloseTo(norm, 4);
      const c = 0.5 / (norm + 1e-6);
      for (let i = 0; i < 16; i++) {
        expect(r.clipped[i]).toBeCloseTo(r.g0[i]! * c, 5);
        // AdamW step 1: m̂ = g, v̂ = g², p ← p(1 − lr·wd) − lr·g/(|g| + eps)
        const g = r.clipped[i]!;
        expect(r.p1[i]).toBeCloseTo(
          r.p0[i]! * (1 - cfg.lr * cfg.weight_decay) - (cfg.lr * g) / (Math.abs(g) + cfg.eps),
          5,
        );
      }
      expect(r.answers).toEqual([{ type: 'GRADS_ZEROED' }, { type: 'CLIPPED', gradNorm: r.norm }, { type: 'STEPPED' }]);
    }
  });
});

describe('FSDP unit alone', () => {
  it('unshard gathers the full unit, reshard frees it, reduce sums both ranks’ gradients into each shard', async () => {
    const w = createInprocWorld(2, { seed: 13 });
    const replicate = createInprocWorld(1).comms[0]!;
    const k = getKernels();
    const res = await Promise.all(
      w.comms.map(async (comm, r) => {
        const model = buildModel(1, 0);
        const unit = model.units.get('tok_embeddings') ?? [...model.units.values()][0]!;
        const full = Float32Array.from(unit.data);
        const alloc = new Allocator();
        const failure: StepFailure = { first: undefined };
        const shard = new FsdpUnitShard(
          {
            unit,
            group: comm,
            reduceGroup: comm,
            replicate,
            reshardAfterForward: true,
            gradReduce: 'sum',
            divideFactor: 1,
            isExperts: false,
            layer: null,
            queue: (fn) => fn(),
          },
          alloc,
          k,
          failure,
        );
        const root = setup({ actors: { fsdp: provideFsdpUnit(new Map([[unit.id, shard]]), failure) } }).createMachine({
          entry: spawnChild('fsdp', { id: `fsdp:${unit.id}`, systemId: `fsdp:${unit.id}`, input: shard.input }),
        });
        const sys = createActor(root);
        sys.start();
        const ref = sys.system.get(`fsdp:${unit.id}`)!;
        await shard.unshard(ref, 'forward', 0, 1);
        const gathered = Float32Array.from(unit.data.subarray(0, full.length));
        shard.forwardDone(ref);
        await shard.unshard(ref, 'backward', 0, 1); // sent while resharding: queued by the machine
        unit.grad.fill(r + 1);
        await shard.reduceGrads(ref);
        const state = ref.getSnapshot().value;
        sys.stop();
        return { full, gathered, gradShard: Float32Array.from(shard.gradShard), state };
      }),
    );
    for (const r of res) {
      expect(r.gathered).toEqual(r.full);
      expect(r.state).toBe('resharded');
      expect([...new Set(r.gradShard)]).toEqual([3]);
    }
  });
});
