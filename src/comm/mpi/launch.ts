// launch() under mpi: this process is one rank of an `mpiexec.mpich -n N` job. It initializes MPI, runs the rank
// program on the world communicator, and on success meets the other ranks in a timed barrier (so that the
// blocking MPI_Finalize never waits on a rank that is still running or has failed) before finalizing. On failure it
// does not return: the rank reports, notifies the others and aborts the job (world.ts), because under MPI a failed
// rank that simply returned would leave its peers waiting. The one exception is a job of size 1.

import { profileByName } from '../capabilities.ts';
import { rankErrorText } from '../errors.ts';
import type { LaunchResult, RankContext, RankEntry, RankOutcome, WorldOptions } from '../launch.ts';
import { loadRankMain } from '../rank-program.ts';
import { MpiCommunicator } from './communicator.ts';
import { MpiWorld } from './world.ts';

export { mpiAvailability, MpiUnavailableError } from './native.ts';

export async function launchMpi<A, R>(opts: WorldOptions, entry: RankEntry, args: A): Promise<LaunchResult<R>> {
  const profile = profileByName(opts.profile ?? 'full');
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const world = MpiWorld.init({ profile, timeoutMs, flightEntries: opts.flightEntries ?? 2000, dumpDir: opts.dumpDir ?? null });
  let outcome: RankOutcome<R>;
  try {
    await world.exchangeNodes();
    const main = await loadRankMain<A, R>(entry);
    const comm = new MpiCommunicator({
      world,
      handle: 0,
      rank: world.rank,
      ranks: Array.from({ length: world.size }, (_, i) => i),
      name: 'world',
      profile,
      timeoutMs,
    });
    const ctx: RankContext<A> = { rank: world.rank, size: world.size, world: comm, recorder: world.recorder, transport: 'mpi', args };
    const value = await main(ctx);
    await comm.barrier({ tag: 'finalize' });
    outcome = { rank: world.rank, ok: true, value };
  } catch (e) {
    if (world.size > 1) return world.fail(rankErrorText(e));
    outcome = world.recordFailure(rankErrorText(e), `rank 0 failed: ${(e as Error)?.message ?? e}`).outcome;
  }
  await world.finalize();
  return outcome.ok ? { outcomes: [outcome] } : { outcomes: [outcome], diagnosis: `rank 0 (the only rank) failed: ${outcome.error.split('\n', 1)[0]}` };
}
