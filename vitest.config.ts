import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Tests that start MPI processes, browsers or worker pools already use both cores; two files at a time.
    maxWorkers: 2,
    pool: 'forks',
  },
});
