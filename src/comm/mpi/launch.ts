// launch() under mpi: this process is one rank of an `mpiexec.mpich -n N` job. It initializes MPI, runs the rank
// program on the world communicator, and on success meets the other ranks in a timed barrier (so that the
// blocking MPI_Finalize never waits on a rank that is still running or has failed) before finalizing. On failure it
// does not return: the rank reports, notifies the others and aborts the job (world.ts), because under MPI a failed
// rank that simply returned would leave its peers waiting. The one exception is a job of size 1.
// The ccl transport runs the same way (runMpiRank), with oneCCL communicators (src/comm/ccl/launch.ts).

import { profileByName, type Profile } from '../capabilities.ts';
import type { Communicator } from '../communicator.ts';
import { rankErrorText } from '../errors.ts';
import type { LaunchResult, RankContext, RankEntry, RankOutcome, WorldOptions } from '../launch.ts';
import { loadRankMain } from '../rank-program.ts';
import { MpiCommunicator, type MpiCommInit } from './communicator.ts';
import type { MpiBinding } from './native.ts';
import { MpiWorld } from './world.ts';

export { mpiAvailability, MpiUnavailableError } from './native.ts';

/** What differs between the process transports: the binding, and how the world communicator is made. */
export interface ProcessTransport {
  name: 'mpi' | 'ccl';
  /** Loads the binding or throws an error naming cause and fix (before MPI is up). */
  binding(): MpiBinding;
  /** After MPI_Init and the node exchange. */
  worldComm(world: MpiWorld, init: MpiCommInit): Promise<Communicator>;
}

const MPI: ProcessTransport = {
  name: 'mpi',
  binding: () => MpiWorld.binding(),
  worldComm: async (_world, init) => new MpiCommunicator(init),
};

export function launchMpi<A, R>(opts: WorldOptions, entry: RankEntry, args: A): Promise<LaunchResult<R>> {
  return runMpiRank(MPI, opts, entry, args);
}

export async function runMpiRank<A, R>(
  t: ProcessTransport,
  opts: WorldOptions,
  entry: RankEntry,
  args: A,
): Promise<LaunchResult<R>> {
  const profile: Profile = profileByName(opts.profile ?? 'full');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const world = MpiWorld.init(
    { transport: t.name, profile, timeoutMs, flightEntries: opts.flightEntries ?? 2000, dumpDir: opts.dumpDir ?? null },
    t.binding(),
  );
  let outcome: RankOutcome<R>;
  try {
    await world.exchangeNodes();
    const main = await loadRankMain<A, R>(entry);
    const comm = await t.worldComm(world, {
      world,
      handle: 0,
      rank: world.rank,
      ranks: Array.from({ length: world.size }, (_, i) => i),
      name: 'world',
      profile,
      timeoutMs,
    });
    const ctx: RankContext<A> = {
      rank: world.rank,
      size: world.size,
      world: comm,
      recorder: world.recorder,
      transport: t.name,
      args,
    };
    const value = await main(ctx);
    await comm.barrier({ tag: 'finalize' });
    outcome = { rank: world.rank, ok: true, value };
  } catch (e) {
    if (world.size > 1) return world.fail(rankErrorText(e));
    outcome = world.recordFailure(rankErrorText(e), `rank 0 failed: ${(e as Error)?.message ?? e}`).outcome;
  }
  await world.finalize();
  return outcome.ok
    ? { outcomes: [outcome] }
    : { outcomes: [outcome], diagnosis: `rank 0 (the only rank) failed: ${outcome.error.split('\n', 1)[0]}` };
}
