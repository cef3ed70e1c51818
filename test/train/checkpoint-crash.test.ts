// A checkpoint write killed with SIGKILL half way (a real child process, not a simulation) must leave the previous
// checkpoint usable and the partial one ignored, with a message saying why.
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import {
  commitManifest,
  latestComplete,
  listCheckpoints,
  readCheckpoint,
  stepDir,
  writeRankShard,
} from '../../src/train/checkpoint/index.ts';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const checkpointModule = pathToFileURL(join(repo, 'src/train/checkpoint/index.ts')).href;

// Writes a small complete checkpoint at step 1, then a big one (4 ranks × 32 MiB) at step 2, announcing each rank
// as it finishes. The parent kills it after the first rank of step 2.
const CHILD = `
import { writeCheckpoint, writeRankShard, commitManifest, stepDir } from ${JSON.stringify(checkpointModule)};
const folder = process.argv[2];
const small = (r) => ({ tensors: { w: { shape: [4], data: Float32Array.of(r, r, r, r) } }, extras: { step: 1 } });
writeCheckpoint(folder, 1, [0, 1, 2, 3].map(small), { configHash: 'h', mesh: { dp_shard: 4 } });
console.log('step 1 committed');
const dir = stepDir(folder, 2);
for (let r = 0; r < 4; r++) {
  const big = new Float32Array(8 << 20).fill(r + 0.5);
  writeRankShard(dir, r, { tensors: { w: { shape: [big.length], data: big } }, extras: { step: 2 } });
  console.log('rank ' + r + ' written');
}
commitManifest(dir, { step: 2, worldSize: 4, configHash: 'h', mesh: { dp_shard: 4 } });
console.log('step 2 committed');
`;

function runAndKill(
  script: string,
  folder: string,
  killAfter: RegExp,
): Promise<{ signal: NodeJS.Signals | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, folder], {
      cwd: repo,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (killAfter.test(out)) child.kill('SIGKILL');
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) =>
      signal || code === 0 ? resolve({ signal, out }) : reject(new Error(`child exited ${code}: ${err}`)),
    );
  });
}

describe('checkpoint crash safety', () => {
  it('a writer SIGKILLed mid-checkpoint leaves the previous checkpoint usable and the partial one ignored', async () => {
    const root = mkdtempSync(join(tmpdir(), 'moe-ckpt-crash-'));
    const script = join(root, 'writer.mts');
    writeFileSync(script, CHILD);
    const folder = join(root, 'checkpoint');

    const { signal, out } = await runAndKill(script, folder, /rank 0 written/);
    expect(signal).toBe('SIGKILL');
    expect(out).toMatch(/step 1 committed/);
    expect(out).not.toMatch(/step 2 committed/);

    const l = listCheckpoints(folder);
    expect(l.complete.map((c) => c.step)).toEqual([1]);
    expect(l.partial.map((p) => p.step)).toEqual([2]);
    expect(l.partial[0]!.reason).toMatch(/step-2 is incomplete: no manifest\.json \(the write did not finish/);
    const latest = latestComplete(folder);
    expect(latest?.step).toBe(1);
    const ck = readCheckpoint(latest!.dir);
    expect(ck.shards.map((s) => Array.from(s.tensors.get('w')!.data as Float32Array))).toEqual(
      [0, 1, 2, 3].map((r) => [r, r, r, r]),
    );

    // The dead writer got as far as rank 0's files.
    const dir = stepDir(folder, 2);
    expect(readdirSync(dir)).toEqual(expect.arrayContaining(['rank0.safetensors', 'rank0.json', 'rank0.done.json']));

    // The resumed run writes step 2 again; the commit sweeps the dead writer's leftovers (temp files, markers).
    for (let r = 0; r < 4; r++)
      writeRankShard(dir, r, { tensors: { w: { shape: [2], data: Float32Array.of(r, 2) } }, extras: { step: 2 } });
    commitManifest(dir, { step: 2, worldSize: 4, configHash: 'h', mesh: { dp_shard: 4 } });
    expect(latestComplete(folder)?.step).toBe(2);
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp') || f.includes('done'))).toEqual([]);
  });
});
