// `moe-actors train`: see src/train/trainer.ts.
import { runTraining, type TrainOptions } from '../train/trainer.ts';
import { parseFault } from './fault-spec.ts';

export async function runTrain(opts: Record<string, unknown>, overrides: string[]): Promise<void> {
  const { fault, ...rest } = opts as TrainOptions & { fault?: string[] };
  const faults = (fault ?? []).map(parseFault);
  await runTraining({ ...rest, ...(faults.length ? { faults } : {}) }, overrides);
}
