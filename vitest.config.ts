import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that start MPI processes, browsers or worker pools already use both cores; two files at a time.
    maxWorkers: 2,
    pool: 'forks',
    // Two files share the cores: a training that found the node idle at its start would spin its OpenMP workers
    // (src/tensor/omp-wait.ts) beside the other file's threads, where spinning is 3–5× slower than sleeping.
    env:
      process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined
        ? { OMP_WAIT_POLICY: 'passive' }
        : {},
  },
});
