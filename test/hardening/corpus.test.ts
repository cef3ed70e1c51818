// The hardening corpus (issue #14): bad configs, command lines, data, checkpoints and tensors, resumes and
// resource limits, each checked for exit status, message key words, nothing changed outside the run folder and
// no earlier checkpoint lost (harness.ts). Signals and faults that need real processes are in processes.test.ts.

import { afterAll, describe, expect, it } from 'vitest';
import { checkCase, cleanup, type Case } from './harness.ts';
import { checkpointCases } from './cases/checkpoint.ts';
import { configCases } from './cases/config.ts';
import { cliCases } from './cases/cli.ts';
import { dataCases, tensorCases } from './cases/data.ts';
import { resourceCases, resumeCases } from './cases/resume.ts';

const tables: Record<string, Case[]> = {
  config: configCases,
  cli: cliCases,
  data: dataCases,
  checkpoint: checkpointCases,
  tensor: tensorCases,
  resume: resumeCases,
  resource: resourceCases,
};

afterAll(cleanup);

for (const [kind, cases] of Object.entries(tables)) {
  describe(`hardening corpus: ${kind}`, () => {
    for (const c of cases) it(c.name, () => checkCase(c));
  });
}

it('the corpus has at least 120 cases', () => {
  expect(Object.values(tables).reduce((a, t) => a + t.length, 0)).toBeGreaterThanOrEqual(120);
});
