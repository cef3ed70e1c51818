// `moe-actors train`: see src/train/trainer.ts.
import { runTraining, type TrainOptions } from '../train/trainer.ts';

export async function runTrain(opts: Record<string, unknown>, overrides: string[]): Promise<void> {
  await runTraining(opts as TrainOptions, overrides);
}
