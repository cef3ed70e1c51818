// The ccl transport's Communicator: the mpi transport's communicator (checks, premul_sum/avg composed from SUM,
// issue order, timeouts, flight entries) with oneCCL carrying the collectives. Every group has both an MPI
// communicator — for split, which oneCCL's host API does not offer across processes, and for bootstrapping — and
// a oneCCL communicator over the same members, made from a key-value store whose main side lives on the group's
// first member (its address reaches the others in a polled, timed MPI broadcast).

import type { Communicator } from '../communicator.ts';
import { MpiCommunicator, type CollectiveCalls, type MpiCommInit } from '../mpi/communicator.ts';
import type { MpiWorld } from '../mpi/world.ts';
import type { CclBinding } from './native.ts';

export function cclCalls(b: CclBinding, h: number): CollectiveCalls {
  return {
    allGather: (s, r) => b.cclAllgather(h, s, r),
    allGatherV: (s, r, c) => b.cclAllgatherv(h, s, r, c),
    reduceScatter: (s, r, op) => b.cclReduceScatter(h, s, r, op),
    allReduce: (buf, op) => b.cclAllreduce(h, buf, op),
    allToAllV: (s, sc, r, rc) => b.cclAlltoallv(h, s, sc, r, rc),
    broadcast: (buf, root) => b.cclBroadcast(h, buf, root),
    barrier: () => b.cclBarrier(h),
  };
}

/**
 * A oneCCL communicator over the members of MPI communicator `mpiHandle` (this rank is `rank` of `size`). The
 * blocking ccl::create_communicator is called only after the KVS address arrived, i.e. once the group's first
 * member is known to be there; the others of a split have just met in the split's own timed exchange.
 */
export async function cclCommOver(
  world: MpiWorld,
  mpiHandle: number,
  rank: number,
  size: number,
  group: string,
): Promise<number> {
  const b = world.b as CclBinding;
  const address = new Int32Array(64);
  let kvs = 0;
  if (rank === 0) {
    const main = b.kvsMain();
    kvs = main.kvs;
    address.set(main.address);
  }
  if (size > 1) {
    const req = b.ibcast(mpiHandle, address, 0);
    await world.timedWait(
      req,
      { group, op: 'broadcast(oneCCL kvs address)', seq: 0, rank },
      address.byteLength,
      "oneCCL's key-value store bootstrap",
    );
  }
  if (rank !== 0) kvs = b.kvsJoin(address);
  return b.cclCommCreate(size, rank, kvs);
}

export interface CclCommInit extends MpiCommInit {
  cclHandle: number;
}

export class CclCommunicator extends MpiCommunicator {
  readonly cclHandle: number;

  constructor(init: CclCommInit) {
    super({ ...init, transport: 'ccl', calls: cclCalls(init.world.b as CclBinding, init.cclHandle) });
    this.cclHandle = init.cclHandle;
  }

  protected override async derive(init: MpiCommInit): Promise<Communicator> {
    const cclHandle = await cclCommOver(init.world, init.handle, init.rank, init.ranks.length, init.name);
    return new CclCommunicator({ ...init, cclHandle });
  }

  protected override releaseNative(): void {
    (this.world.b as CclBinding).cclCommFree(this.cclHandle);
    super.releaseNative();
  }
}
