// How many threads the process's side pool gets: the cores the ranks' compute threads leave free, at least one.
// The pool works beside the ranks (checkpoint writes, tokenizing); giving it cores the ranks' BLAS threads use
// would slow every step to speed up work that is meant to stay off the step's path.

export interface PoolSizeInput {
  /** Cores of the machine (os.availableParallelism()). */
  cores: number;
  /** BLAS/OpenMP threads of each rank. */
  computeThreadsPerRank: number;
  /** Ranks living in this process (threads/inproc: the world; mpi: 1). */
  ranksInProcess: number;
  /** Processes sharing the node (mpi: MPI_LOCALNRANKS; otherwise 1). */
  processesOnNode?: number;
}

export function poolThreads({
  cores,
  computeThreadsPerRank,
  ranksInProcess,
  processesOnNode = 1,
}: PoolSizeInput): number {
  const busy = computeThreadsPerRank * ranksInProcess * processesOnNode;
  const free = Math.floor((cores - busy) / Math.max(1, processesOnNode));
  return Math.max(1, free);
}
