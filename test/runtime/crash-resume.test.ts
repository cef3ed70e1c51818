// Crash and resume, with real processes and files. The tiny job (4 inproc ranks, EP 4 + FSDP 4, checkpoints
// every 2 steps, 6 steps) runs three times through the CLI:
//   full    — uninterrupted;
//   crash   — SIGKILLed while it writes the step-4 checkpoint (the test watches the checkpoint folder and kills the
//             process group the moment step-4/ exists without a manifest);
//   crash   — started again on the same run folder with --checkpoint.enable: it must say it ignores the partial
//             step-4 (and why), resume from step 2, and then reproduce the uninterrupted run bit for bit: every
//             step's loss in metrics.jsonl and every tensor (params, AdamW moments, expert biases) of the final
//             checkpoint.
// Then the uninterrupted run's step-4 checkpoint (written by EP 4) is loaded onto EP 2 and EP 1 meshes of the same
// 4 ranks: the loss continues where the EP 4 run was (1e-5 relative at the next step: fp32 reassociation only).
// Last, new runs start from that checkpoint through [checkpoint] initial_load_path (step folder, bare step-N,
// checkpoint folder), and a corrupted or missing one is refused with the reason; and load_step resumes from an older
// complete step.
import { afterAll, describe, expect, it } from 'vitest';
import { cpSync, existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { listCheckpoints } from '../../src/train/checkpoint/index.ts';
import { runTraining } from '../../src/train/trainer.ts';
import {
  captureOutput,
  checkCheckpoints,
  checkMetrics,
  checkpointTensors,
  describeChild,
  expectSameCheckpoint,
  firstBitDifference,
  readJsonl,
  runTrainCli,
  TINY,
  tmpRoot,
  type ChildRun,
} from './helpers.ts';

const root = tmpRoot('resume');
afterAll(() => rmSync(root, { recursive: true, force: true }));
const STEPS = [1, 2, 3, 4, 5, 6];
const args = (name: string, extra: string[] = []) => [
  '--config',
  TINY,
  '--job.dump_folder',
  root,
  '--job.run_name',
  name,
  '--checkpoint.enable',
  '--checkpoint.interval',
  '2',
  '--trace.enable',
  'false',
  ...extra,
];
const ckptFolder = (name: string) => join(root, name, 'checkpoint');

/**
 * Runs the job and SIGKILLs it as soon as step-4/ holds a file (a rank's temp file or finished shard) and no
 * manifest.json yet; returns what the folder held at that moment.
 */
async function runAndKillDuringWrite(name: string): Promise<{ run: ChildRun; seen: string[] | null }> {
  const step4 = join(ckptFolder(name), 'step-4');
  let seen: string[] | null = null;
  const run = await runTrainCli(args(name), {
    timeoutMs: 40_000,
    pollMs: 1,
    poll: (kill) => {
      if (seen || !existsSync(step4)) return;
      const files = readdirSync(step4);
      if (files.length === 0 || files.includes('manifest.json')) return;
      kill();
      seen = files;
    },
  });
  return { run, seen };
}

describe('crash during a checkpoint write, then resume', () => {
  let full: Map<number, { loss: number; gradNorm: number; lr: number }>;

  it('the uninterrupted run: 6 steps, complete checkpoints at 2, 4, 6', async () => {
    const r = await runTrainCli(args('full'), { timeoutMs: 40_000 });
    expect(r.code, describeChild(r)).toBe(0);
    full = checkMetrics(join(root, 'full'), 4, STEPS);
    checkCheckpoints(ckptFolder('full'), [2, 4, 6], 4);
    console.info(`full: ${r.ms.toFixed(0)} ms, losses ${STEPS.map((s) => full.get(s)!.loss.toFixed(5)).join(' ')}`);
  });

  it('SIGKILL while step-4 is being written leaves step-2 usable and step-4 ignored; the resumed run reproduces the uninterrupted one bit for bit', {
    timeout: 180_000,
  }, async () => {
    // The write window of this job is ~30-40 ms; a kill that lands after the commit is retried on a fresh run.
    let attempt = 0;
    let name = '';
    let killed: { run: ChildRun; seen: string[] | null } | null = null;
    for (; attempt < 3; attempt++) {
      name = `crash${attempt}`;
      killed = await runAndKillDuringWrite(name);
      // A machine too busy to see the write window in time (the run finished, or the kill came after the commit):
      // try again on a fresh run folder.
      if (killed.seen === null) {
        expect(killed.run.code, describeChild(killed.run)).toBe(0);
        continue;
      }
      expect(killed.run.signal, describeChild(killed.run)).toBe('SIGKILL');
      if (!existsSync(join(ckptFolder(name), 'step-4', 'manifest.json'))) break;
    }
    expect(attempt, 'a kill landed inside the checkpoint write').toBeLessThan(3);
    const k = killed!;
    console.info(
      `killed ${name} after ${k.run.ms.toFixed(0)} ms; step-4/ held [${k.seen!.join(', ')}] at the kill, [${readdirSync(join(ckptFolder(name), 'step-4')).join(', ')}] after`,
    );
    expect(k.run.stdout).toMatch(/^checkpoint: .*step-2$/m);
    expect(k.run.stdout).not.toMatch(/^checkpoint: .*step-4$/m);

    // On disk: step-2 complete, step-4 partial with the reason.
    const l = listCheckpoints(ckptFolder(name));
    expect(l.complete.map((c) => c.step)).toEqual([2]);
    expect(l.partial.map((p) => p.step)).toEqual([4]);
    expect(l.partial[0]!.reason).toMatch(/no manifest\.json/);
    // The killed run's metrics so far are whole lines and agree with the uninterrupted run.
    // (Ranks reach the checkpoint one after another: some may have logged step 4 before the kill.)
    const before = readJsonl(join(root, name, 'metrics.jsonl'));
    expect(before.length).toBeGreaterThanOrEqual(3 * 4);
    expect(before.length).toBeLessThanOrEqual(4 * 4);

    // Resume on the same run folder.
    const r = await runTrainCli(args(name), { timeoutMs: 40_000 });
    expect(r.code, describeChild(r)).toBe(0);
    const step2 = join(ckptFolder(name), 'step-2');
    const step4 = join(ckptFolder(name), 'step-4');
    expect(r.stdout).toContain(`resume: ignoring incomplete checkpoint ${step4}: `);
    expect(r.stdout).toContain(`resumed from ${step2} (step 2)`);
    expect(r.stdout.match(/^step: /gm)?.length, 'the resumed run does steps 3..6 only').toBe(4);
    checkCheckpoints(ckptFolder(name), [2, 4, 6], 4);

    // Every record of every step (the killed run's steps 1-4, the resumed run's 3-6) has the uninterrupted loss.
    const recs = readJsonl(join(root, name, 'metrics.jsonl'));
    for (const rec of recs) {
      const want = full.get(rec.step as number)!;
      expect(rec['loss_metrics/global_avg_loss'], `step ${rec.step} rank ${rec.rank}`).toBe(want.loss);
      expect(rec.grad_norm, `step ${rec.step} rank ${rec.rank} grad norm`).toBe(want.gradNorm);
      expect(rec.lr, `step ${rec.step} lr`).toBe(want.lr);
    }
    const resumed = checkMetrics(join(root, name), 4, STEPS);
    for (const s of STEPS) expect(resumed.get(s)!.loss).toBe(full.get(s)!.loss);
    expect(recs.length).toBe(before.length + 4 * 4);

    // The final (and the rewritten step-4) checkpoints hold the same bits as the uninterrupted run's.
    for (const step of [4, 6])
      expectSameCheckpoint(join(ckptFolder('full'), `step-${step}`), join(ckptFolder(name), `step-${step}`));
    console.info(
      `resumed ${name}: ${r.ms.toFixed(0)} ms; steps 3-6 and ${checkpointTensors(join(ckptFolder('full'), 'step-6')).size} checkpoint tensors bit-identical`,
    );
  });

  for (const ep of [2, 1]) {
    it(`the EP 4 checkpoint of step 4 loads onto EP ${ep} (4 ranks) and the loss continues within 1e-5`, async () => {
      const name = `reshard-ep${ep}`;
      cpSync(join(ckptFolder('full'), 'step-4'), join(ckptFolder(name), 'step-4'), { recursive: true });
      expect(JSON.parse(readFileSync(join(ckptFolder(name), 'step-4', 'manifest.json'), 'utf8')).mesh.ep).toBe(4);
      const { value: out, logs } = await captureOutput(() =>
        runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
          ...args(name).slice(2),
          '--parallelism.expert_parallel_degree',
          String(ep),
        ]),
      );
      expect(logs.join('\n')).toContain(`resumed from ${join(ckptFolder(name), 'step-4')} (step 4)`);
      expect(out!.plan.layout.degrees.ep).toBe(ep);
      const r0 = out!.results[0]!;
      expect(r0.resumedFrom).toBe(4);
      expect(r0.steps.map((s) => s.step)).toEqual([5, 6]);
      const rel = (s: number) => Math.abs(r0.steps[s - 5]!.loss - full.get(s)!.loss) / full.get(s)!.loss;
      console.info(
        `EP ${ep} from the EP 4 step-4 checkpoint: step 5 loss ${r0.steps[0]!.loss.toFixed(6)} (EP 4: ${full.get(5)!.loss.toFixed(6)}, rel ${rel(5).toExponential(2)}), step 6 rel ${rel(6).toExponential(2)}`,
      );
      expect(rel(5)).toBeLessThan(1e-5);
      expect(rel(6)).toBeLessThan(1e-4);
      expect(r0.steps[0]!.lr).toBe(full.get(5)!.lr);
      expect(Math.abs(r0.steps[0]!.gradNorm - full.get(5)!.gradNorm) / full.get(5)!.gradNorm).toBeLessThan(1e-4);
    });
  }
  it('load_step picks an older complete checkpoint of the run (steps 5-6 and the rewritten step-6 are bit-identical); a missing step is refused, listing the complete ones', async () => {
    const name = 'load-step';
    cpSync(ckptFolder('full'), ckptFolder(name), { recursive: true });
    const r = await runTrainCli(args(name, ['--checkpoint.load_step', '4']), { timeoutMs: 40_000 });
    expect(r.code, describeChild(r)).toBe(0);
    expect(r.stdout).toContain(`resumed from ${join(ckptFolder(name), 'step-4')} (step 4)`);
    const m = checkMetrics(join(root, name), 4, [5, 6]);
    for (const s of [5, 6]) expect(m.get(s)!.loss, `step ${s}`).toBe(full.get(s)!.loss);
    checkCheckpoints(ckptFolder(name), [2, 4, 6], 4);
    const want = checkpointTensors(join(ckptFolder('full'), 'step-6'));
    const got = checkpointTensors(join(ckptFolder(name), 'step-6'));
    for (const [n, a] of want) expect(firstBitDifference(got.get(n)!, a), `step-6 ${n}`).toBe(-1);

    const bad = await runTrainCli(args(name, ['--checkpoint.load_step', '3']), { timeoutMs: 40_000 });
    expect(bad.code, describeChild(bad)).not.toBe(0);
    expect(bad.stdout + bad.stderr).toContain(
      `[checkpoint] load_step = 3: no complete checkpoint for that step in ${ckptFolder(name)} (complete: 2, 4, 6)`,
    );
  });

  it('initial_load_path: a step folder (absolute or a bare step-N in the working directory) or its checkpoint folder starts a new run from those weights; a corrupted one is refused, naming the file', {
    timeout: 120_000,
  }, async () => {
    const from = join(ckptFolder('full'), 'step-4');
    const init = (name: string, path: string, cwd?: string) =>
      runTrainCli(
        [
          '--config',
          TINY,
          '--job.dump_folder',
          root,
          '--job.run_name',
          name,
          '--trace.enable',
          'false',
          '--training.steps',
          '2',
          '--checkpoint.initial_load_path',
          path,
        ],
        { timeoutMs: 40_000, cwd },
      );

    const abs = await init('init-abs', from);
    expect(abs.code, describeChild(abs)).toBe(0);
    expect(abs.stdout).toContain(`initialised from ${from} (step 4)`);
    expect(abs.stdout.match(/^step: /gm)?.length, 'a new run counts its steps from 1').toBe(2);
    const a = checkMetrics(join(root, 'init-abs'), 4, [1, 2]);
    // Trained weights: the first step's loss is far below the uninterrupted run's first (random-init) step.
    expect(a.get(1)!.loss).toBeLessThan(full.get(1)!.loss - 0.5);
    // Its own LR schedule from warmup (the same 2 warmup steps as the 6-step run), not the checkpoint's index 4,
    // which lies past this 2-step run's end where the decay formula gives a non-finite lr.
    for (const s of [1, 2]) expect(a.get(s)!.lr, `step ${s} lr`).toBe(full.get(s)!.lr);

    const bare = await init('init-bare', 'step-4', ckptFolder('full'));
    expect(bare.code, describeChild(bare)).toBe(0);
    expect(bare.stdout).toContain(`initialised from ${from} (step 4)`);
    const b = checkMetrics(join(root, 'init-bare'), 4, [1, 2]);
    for (const s of [1, 2]) expect(b.get(s)!.loss, `step ${s}: bare step-4 = absolute path`).toBe(a.get(s)!.loss);

    const folder = await init('init-folder', ckptFolder('full'));
    expect(folder.code, describeChild(folder)).toBe(0);
    expect(folder.stdout).toContain(`initialised from ${join(ckptFolder('full'), 'step-6')} (step 6)`);

    const broken = join(root, 'broken', 'step-4');
    cpSync(from, broken, { recursive: true });
    const shard = join(broken, 'rank1.safetensors');
    const bytes = readFileSync(shard);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    writeFileSync(shard, bytes);
    const bad = await init('init-broken', broken);
    expect(bad.code, describeChild(bad)).not.toBe(0);
    expect(bad.stdout + bad.stderr).toContain(`initial_load_path = ${broken}: ${shard} is corrupted: SHA-256`);
    const none = await init('init-none', join(root, 'nowhere'));
    expect(none.code, describeChild(none)).not.toBe(0);
    expect(none.stdout + none.stderr).toMatch(
      /initial_load_path = .*nowhere: .*nowhere does not exist; give a checkpoint folder/,
    );
    expect(existsSync(join(root, 'init-none')), 'refused before a run folder is made').toBe(false);
  });
});
