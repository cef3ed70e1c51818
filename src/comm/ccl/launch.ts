// launch() under ccl: like mpi (one rank per process of an `mpiexec.mpich -n N` job, the same failure handling),
// with oneCCL initialized after MPI and the world's collectives on a oneCCL communicator.

import type { LaunchResult, RankEntry, WorldOptions } from '../launch.ts';
import { runMpiRank, type ProcessTransport } from '../mpi/launch.ts';
import { CclCommunicator, cclCommOver } from './communicator.ts';
import { loadCcl, type CclBinding } from './native.ts';

export { cclAvailability, CclUnavailableError } from './native.ts';

const CCL: ProcessTransport = {
  name: 'ccl',
  binding: loadCcl,
  async worldComm(world, init) {
    (world.b as CclBinding).cclInit();
    const cclHandle = await cclCommOver(world, init.handle, init.rank, init.ranks.length, init.name);
    return new CclCommunicator({ ...init, cclHandle });
  },
};

export function launchCcl<A, R>(opts: WorldOptions, entry: RankEntry, args: A): Promise<LaunchResult<R>> {
  return runMpiRank(CCL, opts, entry, args);
}
