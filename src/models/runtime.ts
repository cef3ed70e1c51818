// What every layer needs to run: the kernels of this thread and the rank's activation pool.
import type { Kernels } from '../tensor/kernels-api.ts';
import type { Allocator } from '../tensor/allocator.ts';
import { ActivationPool } from './pool.ts';

export interface Runtime {
  readonly k: Kernels;
  readonly pool: ActivationPool;
}

export function createRuntime(k: Kernels, alloc: Allocator): Runtime {
  return { k, pool: new ActivationPool(alloc) };
}
