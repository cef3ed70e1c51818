// A training run on the ccl transport, started the way a user starts one (scripts/launch-mpi.sh --transport ccl):
// the runtime tests' tiny job on 2 ranks, EP 2 + FSDP 2, 4 steps with checkpoints at 2 and 4. The start-up probe
// runs ('auto' is on for ccl) and plan.txt lists what it measured on oneCCL. Then a second run on a copy of its
// checkpoints resumes from step 2 (`--checkpoint.load_step 2`, under plain mpiexec.mpich) and must reproduce steps
// 3-4 bit for bit: the losses, grad norms and every tensor of the rewritten step-4 checkpoint (params, AdamW
// moments, expert biases). Also the refusal without the binding, before any rank starts.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkCheckpoints,
  checkMetrics,
  checkpointTensors,
  describeChild,
  firstBitDifference,
  runChild,
  TINY,
} from '../runtime/helpers.ts';
import { cclSkip } from './ccl-skip.ts';

const tmp = mkdtempSync(join(tmpdir(), 'moe-ccl-train-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const LAYOUT = [
  '--parallelism.data_parallel_shard_degree',
  '2',
  '--parallelism.expert_parallel_degree',
  '2',
  '--trace.enable',
  'false',
];
const ARGS = [
  ...LAYOUT,
  '--training.steps',
  '4',
  '--checkpoint.enable',
  '--checkpoint.interval',
  '2',
  '--job.dump_folder',
  tmp,
];
const ckpt = (name: string) => join(tmp, name, 'checkpoint');

describe.skipIf(cclSkip('test/comm/ccl-train.test.ts (a 2-rank training run with the start-up probe, then a resume)'))(
  'training on the ccl transport',
  () => {
    let full: Map<number, { loss: number; gradNorm: number; lr: number }>;

    it('launch-mpi.sh --transport ccl -n 2: 4 steps and checkpoints at 2 and 4; plan.txt carries the probe of oneCCL', {
      timeout: 180_000,
    }, () => {
      const r = spawnSync(
        'bash',
        ['scripts/launch-mpi.sh', '-n', '2', '--config', TINY, '--transport', 'ccl', ...ARGS, '--job.run_name', 'ccl2'],
        {
          encoding: 'utf8',
          timeout: 170_000,
        },
      );
      expect(r.status, r.stderr.slice(-3000)).toBe(0);
      expect(r.stdout).toMatch(/2 ranks on ccl/);
      const plan = readFileSync(join(tmp, 'ccl2', 'plan.txt'), 'utf8');
      expect(plan).toMatch(/backend: ccl\/full/);
      expect(plan).toMatch(/start-up probe on ccl\/full/);
      expect(plan).toMatch(/all_to_all_v\(uneven\)\s+ok/);
      expect(plan).toMatch(/measured: allGather=true .*allToAllV=yes/);
      full = checkMetrics(join(tmp, 'ccl2'), 2, [1, 2, 3, 4]);
      checkCheckpoints(ckpt('ccl2'), [2, 4], 2);
    });

    it('resumed from the step-2 checkpoint, steps 3-4 and the step-4 checkpoint are bit-identical', {
      timeout: 180_000,
    }, async () => {
      expect(full, 'the first run completed').toBeDefined();
      cpSync(ckpt('ccl2'), ckpt('resume'), { recursive: true });
      const r = await runChild(
        'mpiexec.mpich',
        [
          '-n',
          '2',
          process.execPath,
          'bin/moe-actors.mjs',
          'train',
          '--config',
          TINY,
          '--transport',
          'ccl',
          ...ARGS,
          '--job.run_name',
          'resume',
          '--checkpoint.load_step',
          '2',
        ],
        {
          timeoutMs: 170_000,
          env: { UCX_MEM_EVENTS: 'no' },
        },
      );
      expect(r.code, describeChild(r)).toBe(0);
      expect(r.stdout).toContain(`resumed from ${join(ckpt('resume'), 'step-2')} (step 2)`);
      const m = checkMetrics(join(tmp, 'resume'), 2, [3, 4]);
      for (const s of [3, 4]) {
        expect(m.get(s)!.loss, `step ${s} loss`).toBe(full.get(s)!.loss);
        expect(m.get(s)!.gradNorm, `step ${s} grad norm`).toBe(full.get(s)!.gradNorm);
      }
      const want = checkpointTensors(join(ckpt('ccl2'), 'step-4'));
      const got = checkpointTensors(join(ckpt('resume'), 'step-4'));
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      expect([...want.keys()].some((n) => n.includes('optim.exp_avg_sq.'))).toBe(true);
      expect([...want.keys()].some((n) => n.endsWith('.moe.expert_bias'))).toBe(true);
      for (const [n, a] of want)
        expect(firstBitDifference(got.get(n)!, a), `step-4 ${n}: first differing element`).toBe(-1);
    });
  },
);

describe('the ccl transport without its binding', () => {
  it('train --transport ccl is refused before any rank starts, naming cause and fix', () => {
    const fake = join(tmp, 'no-ccl');
    mkdirSync(fake, { recursive: true });
    writeFileSync(
      join(fake, 'UNAVAILABLE'),
      'oneCCL not found ($CCL_ROOT, …).\nFix: set CCL_ROOT to a oneCCL install, then `npm run build:native ccl`.\n',
    );
    const r = spawnSync(process.execPath, ['bin/moe-actors.mjs', 'train', '--transport', 'ccl', ...ARGS], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, MOE_ACTORS_CCL_ADDON_DIR: fake },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/the ccl transport is unavailable: oneCCL not found/);
    expect(r.stderr).toMatch(/Fix: set CCL_ROOT/);
    expect(existsSync(join(tmp, 'run'))).toBe(false);
  });
});
