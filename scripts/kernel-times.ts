// `npm run kernel-times -- <dir> [--steps N] [--top K]`: what MOE_ACTORS_KERNEL_TIMES=<dir> recorded
// (src/tensor/kernel-times.ts), per thread that ran kernels (each rank of a threads job, each MPI rank's process):
// milliseconds by class (matmuls, attention, the transport's copies, the other element-wise kernels), then the top
// kernels averaged over those threads, per step when --steps says how many steps the run took.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { isGemmName, type KernelTally } from '../src/tensor/kernel-times.ts';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { steps: { type: 'string' }, top: { type: 'string', default: '20' } },
});
const dir = positionals[0];
if (!dir) {
  console.error('usage: npm run kernel-times -- <dir written by MOE_ACTORS_KERNEL_TIMES> [--steps N] [--top K]');
  process.exit(2);
}
const steps = values.steps ? Number(values.steps) : 1;
if (!(steps >= 1)) {
  console.error(`kernel-times: --steps must be a positive number of steps, not ${values.steps}`);
  process.exit(2);
}
let files: string[];
try {
  files = readdirSync(dir).filter((f) => /^kernels-\d+-\d+\.json$/.test(f));
} catch (e) {
  console.error(
    `kernel-times: cannot read ${dir} (${(e as Error).message}); run with MOE_ACTORS_KERNEL_TIMES=${dir} first`,
  );
  process.exit(1);
}
if (files.length === 0) {
  console.error(
    `kernel-times: no kernels-<pid>-<thread>.json in ${dir}; run with MOE_ACTORS_KERNEL_TIMES=${dir} first`,
  );
  process.exit(1);
}
const classOf = (name: string) =>
  isGemmName(name)
    ? 'matmul'
    : name.startsWith('attention')
      ? 'attention'
      : name === 'copy'
        ? 'copy (transport)'
        : 'element-wise';
const per = steps > 1 ? '/step' : '';
const fmt = (ms: number) => `${(ms / steps).toFixed(1)} ms${per}`;
const all: Record<string, { ms: number; calls: number; flops: number }> = {};
// Ranks on worker threads (the threads transport): the main thread's calls are the launcher's own (the matmul peak
// it measures), listed but left out of the mean. An MPI rank is its process's main thread.
const threadOf = (f: string) => Number(f.split('-')[2]!.replace('.json', ''));
const workers = files.some((f) => threadOf(f) > 0);
const ranks = files.filter((f) => !workers || threadOf(f) > 0);
console.log(`${files.length} thread(s) in ${dir}${steps > 1 ? `, ${steps} steps` : ''}`);
for (const f of files.sort()) {
  const t = JSON.parse(readFileSync(join(dir, f), 'utf8')) as KernelTally;
  const byClass: Record<string, number> = {};
  let total = 0;
  const counted = ranks.includes(f);
  for (const [name, e] of Object.entries(t)) {
    byClass[classOf(name)] = (byClass[classOf(name)] ?? 0) + e.ms;
    total += e.ms;
    if (!counted) continue;
    const a = (all[name] ??= { ms: 0, calls: 0, flops: 0 });
    a.ms += e.ms;
    a.calls += e.calls;
    a.flops += e.flops;
  }
  const parts = Object.entries(byClass)
    .sort((x, y) => y[1] - x[1])
    .map(([c, ms]) => `${c} ${fmt(ms)}`);
  console.log(`  ${f}${counted ? '' : ' (main thread, not a rank)'}: kernels ${fmt(total)} = ${parts.join(', ')}`);
}
const n = ranks.length;
console.log(`top kernels, mean over the ${n} rank thread(s) (GFLOP/s of a rank's wall time in the call):`);
for (const [name, e] of Object.entries(all)
  .sort((x, y) => y[1].ms - x[1].ms)
  .slice(0, Number(values.top))) {
  const rate = e.flops > 0 ? `, ${(e.flops / e.ms / 1e6).toFixed(0)} GFLOP/s` : '';
  console.log(
    `  ${name.padEnd(36)} ${fmt(e.ms / n).padStart(14)}  ${(e.calls / n / steps).toFixed(1)} calls${per}${rate}`,
  );
}
