// Capability-driven choices, from the job config through the planner to a run. The profiles narrow the transport
// to a real backend (src/comm/capabilities.ts): xccl-2025 (Aurora 2025: no all_to_all, no PREMUL_SUM),
// oneccl-v2 (all_to_all with equal counts only), xccl-2026 (PREMUL_SUM only within a node).
//   - the planner never picks a2a where all_to_all(v) with uneven counts is missing, never premul_sum where
//     PREMUL_SUM is missing (gradient_divide_factor ≠ 1 → "sum-divide"), and refuses a forced choice the backend
//     cannot run, at plan time, naming the backend and the alternative — before any rank starts;
//   - a run under xccl-2025 (inproc, 4 ranks, EP 2) completes with allgather dispatch and SUM-then-divide, and its
//     losses equal a full-profile run's (a2a, plain SUM) on the same data within fp32 reassociation.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { dispatchWhy, gradReduceWhy } from '../../src/protocols/plan-format.ts';
import { PlanError } from '../../src/protocols/planner.ts';
import { loadTrainConfig, planJob, runTraining } from '../../src/train/trainer.ts';
import { captureOutput, describeChild, runTrainCli, TINY, tmpRoot } from './helpers.ts';

const root = tmpRoot('caps');
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The plan the trainer makes for the tiny job with these overrides (4 ranks unless overridden). */
function plan(overrides: string[], ranks = 4) {
  const cfg = loadTrainConfig({ config: TINY, transport: 'inproc', ranks }, overrides);
  return planJob(cfg, ranks);
}
const EP2 = ['--parallelism.expert_parallel_degree', '2'];

describe('the planner follows the backend capabilities', () => {
  it('xccl-2025: never a2a (no all_to_all), never premul_sum (divide factor ≠ 1 → sum-divide), for every EP layout', () => {
    for (const [ranks, degrees] of [
      [4, ['--parallelism.expert_parallel_degree', '2']],
      [4, ['--parallelism.expert_parallel_degree', '4']],
      [
        4,
        [
          '--parallelism.data_parallel_replicate_degree',
          '2',
          '--parallelism.data_parallel_shard_degree',
          '2',
          '--parallelism.expert_parallel_degree',
          '2',
        ],
      ],
      [2, ['--parallelism.data_parallel_shard_degree', '2', '--parallelism.expert_parallel_degree', '2']],
    ] as const) {
      for (const factor of ['1', '4']) {
        const p = plan(['--comm.profile', 'xccl-2025', '--comm.gradient_divide_factor', factor, ...degrees], ranks);
        const where = `${ranks} ranks ${degrees.join(' ')} factor ${factor}`;
        expect(p.backend).toBe('inproc/xccl-2025');
        expect(p.dispatch.choice, where).not.toBe('a2a');
        expect(['allgather-padded', 'allgather-rs'], where).toContain(p.dispatch.choice);
        expect(p.candidates.find((c) => c.strategy === 'a2a')!.blocker, where).toMatch(
          /needs all_to_all .*which the backend lacks/,
        );
        expect(p.dispatch.reason, where).toMatchObject({
          kind: 'fewest-bytes',
          backend: 'inproc/xccl-2025',
          ruledOut: [expect.objectContaining({ strategy: 'a2a' })],
        });
        expect(dispatchWhy(p.dispatch.reason)).toMatch(/ruled out: a2a/);
        expect(p.gradReduce.choice, where).toBe(factor === '1' ? 'sum' : 'sum-divide');
        if (factor !== '1') {
          expect(p.gradReduce.reason, where).toEqual({
            kind: 'premul-blocked',
            blocker: { backend: 'inproc/xccl-2025', kind: 'none' },
            factor: 4,
          });
          expect(gradReduceWhy(p.gradReduce.reason)).toMatch(/inproc\/xccl-2025 has no PREMUL_SUM/);
        }
      }
    }
    // The same layouts on the full profile pick a2a (fewest bytes) and premul_sum: the profile made the difference.
    const full = plan(['--comm.gradient_divide_factor', '4', ...EP2]);
    expect(full.dispatch.choice).toBe('a2a');
    expect(full.gradReduce.choice).toBe('premul-sum');
  });

  it('xccl-2025: forcing a2a or premul-sum fails at plan time naming the backend and the alternative', () => {
    let e: unknown;
    try {
      plan(['--comm.profile', 'xccl-2025', '--comm.dispatch', 'a2a', ...EP2]);
    } catch (x) {
      e = x;
    }
    expect(e).toBeInstanceOf(PlanError);
    expect((e as Error).message).toMatch(
      /\[comm\] dispatch = "a2a" cannot run on backend inproc\/xccl-2025: a2a needs all_to_all/,
    );
    expect((e as Error).message).toMatch(/Use "allgather-padded" or "allgather-rs", or dispatch = "auto"/);
    expect(() =>
      plan([
        '--comm.profile',
        'xccl-2025',
        '--comm.grad_reduce',
        'premul-sum',
        '--comm.gradient_divide_factor',
        '4',
        ...EP2,
      ]),
    ).toThrow(
      /grad_reduce = "premul-sum" cannot run: inproc\/xccl-2025 has no PREMUL_SUM\. Use grad_reduce = "sum-divide"/,
    );
  });

  it('oneccl-v2: a2a is avoided (all_to_all with equal counts only; dispatch counts are uneven) and refused when forced', () => {
    for (const ep of ['2', '4']) {
      const p = plan(['--comm.profile', 'oneccl-v2', '--parallelism.expert_parallel_degree', ep]);
      expect(p.dispatch.choice).not.toBe('a2a');
      expect(p.candidates.find((c) => c.strategy === 'a2a')!.blocker).toMatch(/uneven counts.*only equal counts/);
    }
    expect(() => plan(['--comm.profile', 'oneccl-v2', '--comm.dispatch', 'a2a', ...EP2])).toThrow(
      /cannot run on backend inproc\/oneccl-v2: .*only equal counts.*Use "allgather-padded" or "allgather-rs"/,
    );
    // oneCCL v2 has PREMUL_SUM: with a divide factor the planner uses it.
    expect(plan(['--comm.profile', 'oneccl-v2', '--comm.gradient_divide_factor', '4', ...EP2]).gradReduce.choice).toBe(
      'premul-sum',
    );
  });

  it('xccl-2026: premul_sum within one node, refused when the FSDP group spans nodes ([comm] ranks_per_node)', () => {
    const oneNode = plan(['--comm.profile', 'xccl-2026', '--comm.gradient_divide_factor', '4', ...EP2]);
    expect(oneNode.gradReduce.choice).toBe('premul-sum');
    expect(oneNode.dispatch.choice).toBe('a2a'); // all_to_all works on xccl-2026
    for (const rpn of ['1', '2']) {
      const spans = plan([
        '--comm.profile',
        'xccl-2026',
        '--comm.gradient_divide_factor',
        '4',
        '--comm.ranks_per_node',
        rpn,
        ...EP2,
      ]);
      expect(spans.gradReduce.choice).toBe('sum-divide');
      expect(spans.gradReduce.reason).toEqual({
        kind: 'premul-blocked',
        blocker: { backend: 'inproc/xccl-2026', kind: 'spans-nodes' },
        factor: 4,
      });
      expect(gradReduceWhy(spans.gradReduce.reason)).toMatch(
        /PREMUL_SUM only within a node and the FSDP group spans nodes/,
      );
      expect(() =>
        plan([
          '--comm.profile',
          'xccl-2026',
          '--comm.grad_reduce',
          'premul-sum',
          '--comm.gradient_divide_factor',
          '4',
          '--comm.ranks_per_node',
          rpn,
          ...EP2,
        ]),
      ).toThrow(
        /grad_reduce = "premul-sum" cannot run: inproc\/xccl-2026 has PREMUL_SUM only within a node and the FSDP group spans nodes\. Use grad_reduce = "sum-divide"/,
      );
    }
    // 4 ranks per node: the 4-rank FSDP group is on one node again.
    expect(
      plan(['--comm.profile', 'xccl-2026', '--comm.gradient_divide_factor', '4', '--comm.ranks_per_node', '4', ...EP2])
        .gradReduce.choice,
    ).toBe('premul-sum');
  });
});

describe('runs under a narrowed profile', () => {
  const common = ['--job.dump_folder', root, '--training.steps', '3', ...EP2];

  it('xccl-2025, inproc, 4 ranks, EP 2, divide factor 4: allgather dispatch + SUM-then-divide; losses equal the full profile’s (a2a, SUM)', async () => {
    const full = await captureOutput(() =>
      runTraining({ config: TINY, transport: 'inproc', quiet: true }, [...common, '--job.run_name', 'full-profile']),
    );
    const aurora = await captureOutput(() =>
      runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
        ...common,
        '--job.run_name',
        'xccl-2025',
        '--comm.profile',
        'xccl-2025',
        '--comm.gradient_divide_factor',
        '4',
      ]),
    );
    const f = full.value!;
    const a = aurora.value!;
    expect(f.plan.dispatch.choice).toBe('a2a');
    expect(f.plan.gradReduce.choice).toBe('sum');
    expect(a.plan.backend).toBe('inproc/xccl-2025');
    expect(a.plan.dispatch.choice).not.toBe('a2a');
    expect(a.plan.gradReduce.choice).toBe('sum-divide');
    const fl = f.results[0]!.steps.map((s) => s.loss);
    const al = a.results[0]!.steps.map((s) => s.loss);
    console.info(
      `full (a2a, sum): ${fl.map((l) => l.toFixed(6)).join(' ')}; xccl-2025 (${a.plan.dispatch.choice}, sum-divide/4): ${al.map((l) => l.toFixed(6)).join(' ')}`,
    );
    expect(al).toHaveLength(3);
    for (let i = 0; i < 3; i++) {
      expect(Number.isFinite(al[i]!)).toBe(true);
      expect(Math.abs(al[i]! - fl[i]!) / fl[i]!, `step ${i + 1}`).toBeLessThan(1e-5);
      expect(
        Math.abs(a.results[0]!.steps[i]!.gradNorm - f.results[0]!.steps[i]!.gradNorm) /
          f.results[0]!.steps[i]!.gradNorm,
      ).toBeLessThan(1e-4);
    }
    // What the ranks really issued (trace events of every rank): no all_to_all_v; the full run's dispatch used it.
    const ops = (run: string) => {
      const dir = join(root, run, 'events');
      const seen = new Set<string>();
      for (const n of readdirSync(dir))
        for (const m of readFileSync(join(dir, n), 'utf8').matchAll(/"op":"([a-z_]+)"/g)) seen.add(m[1]!);
      return seen;
    };
    expect(ops('xccl-2025').has('all_to_all_v')).toBe(false);
    expect(ops('xccl-2025').has('reduce_scatter')).toBe(true);
    expect(ops('full-profile').has('all_to_all_v')).toBe(true);
  });

  it('xccl-2025 with dispatch forced to a2a: runTraining throws the PlanError and no rank starts (no run folder)', async () => {
    const err = await runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
      ...common,
      '--job.run_name',
      'forced',
      '--comm.profile',
      'xccl-2025',
      '--comm.dispatch',
      'a2a',
    ]).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(PlanError);
    expect((err as Error).message).toMatch(
      /cannot run on backend inproc\/xccl-2025.*Use "allgather-padded" or "allgather-rs"/,
    );
    expect(existsSync(join(root, 'forced'))).toBe(false);
  });

  it('the CLI reports the same refusal in one line with a non-zero exit, and starts nothing', async () => {
    const r = await runTrainCli(
      [
        '--config',
        TINY,
        '--job.dump_folder',
        root,
        '--job.run_name',
        'forced-cli',
        '--comm.profile',
        'xccl-2025',
        '--comm.dispatch',
        'a2a',
        ...EP2,
      ],
      { timeoutMs: 30_000 },
    );
    expect(r.code, describeChild(r)).toBe(1);
    expect(r.stderr).toMatch(
      /moe-actors: \[comm\] dispatch = "a2a" cannot run on backend inproc\/xccl-2025: .*Use "allgather-padded" or "allgather-rs", or dispatch = "auto"\./,
    );
    expect(r.stdout).not.toMatch(/^step:/m);
    expect(existsSync(join(root, 'forced-cli'))).toBe(false);
  });
});
