// A train-step machine's input for tests that drive the machine itself: one layer, one microbatch, no AC, no units,
// local dispatch; each test overrides what it is about.
import type { TrainStepInput } from '../../src/protocols/train-step.machine.ts';

export function trainStepInput(over: Partial<TrainStepInput> = {}): TrainStepInput {
  return {
    step: 1,
    nLayers: 1,
    microbatches: 1,
    ac: { mode: 'none' },
    biasUpdate: false,
    gradOnly: false,
    units: [],
    strategy: 'local',
    lr: 1e-3,
    maxNorm: 1,
    ...over,
  };
}
