// nodeBusy() feeds the OpenMP wait policy: it must see a core kept busy by another process during its window.
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { nodeBusy } from '../../src/tensor/node-busy.ts';

describe('nodeBusy', () => {
  it('reads /proc/stat over its window and counts a core another process keeps busy', async () => {
    const idle = nodeBusy(100);
    expect(idle.busySource).toContain('over 100 ms');
    expect(idle.busyCores).toBeGreaterThanOrEqual(0);
    expect(idle.busyCores).toBeLessThanOrEqual(availableParallelism() + 0.01);
    const spinner = spawn(process.execPath, ['-e', 'console.log("go"); for (;;) {}'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    try {
      await new Promise<void>((resolve) => spinner.stdout.once('data', () => resolve()));
      const busy = nodeBusy(300);
      expect(busy.busyCores).toBeGreaterThan(0.7);
    } finally {
      spinner.kill('SIGKILL');
    }
  });
});
