// The collective-communication contract every transport (inproc, threads, mpi) implements, and the layers above
// (protocols, actors, trainer) program against. It is deliberately NCCL/MPI-shaped: typed arrays in, typed arrays
// out, every call numbered per group so that a hang can be explained by diffing ranks' flight records.

import type { Capabilities } from './capabilities.ts';
import type { FlightEntry, FlightRecorder } from './flight-recorder.ts';

// Uint16Array carries bfloat16 (raw bits): mixed precision's parameter all-gathers and EP rows move 2-byte elements.
// Only the data-movement collectives take it (all_gather(_v), all_to_all_v, broadcast); reductions need a
// float32/float64 array (mixed_precision_reduce is float32).
export type CommArray = Float32Array | Float64Array | Int32Array | Uint16Array;

export type CollectiveOp =
  | 'all_gather'
  | 'all_gather_v'
  | 'reduce_scatter'
  | 'all_reduce'
  | 'all_to_all_v'
  | 'broadcast'
  | 'barrier';

/** `premul_sum`: every contribution is multiplied by `factor` before the sum (FSDP's gradient pre-divide). */
export type ReduceOp = { op: 'sum' } | { op: 'avg' } | { op: 'max' } | { op: 'premul_sum'; factor: number };

/**
 * Who issued a collective: the actor (its timeline row), the machine and state whose effect the call is, and where
 * in the step. Carried by the call itself, so that concurrent callers (a gradient reduction of layer 3 in flight
 * while layer 2 dispatches) cannot overwrite each other's attribution.
 */
export interface CallSite {
  actor: string;
  machine: string;
  state: string;
  step: number;
  layer: number | null;
  microbatch: number | null;
}

export interface CallOptions {
  /** Overrides the communicator's default timeout for this call. */
  timeoutMs?: number;
  /** What the call is for ("layer 3 dispatch"); carried into the flight recorder and traces. */
  tag?: string;
  /** Who issued it (handed to observers; traces attribute the call to it). */
  site?: CallSite;
}

/** Hooks for the layers above (actors turn them into trace events); called synchronously, keep them cheap. */
export interface CommObserver {
  onStart?(comm: Communicator, entry: FlightEntry, site?: CallSite): void;
  onEnd?(comm: Communicator, entry: FlightEntry, site?: CallSite): void;
}

export interface ByteCounters {
  /** Bytes this rank sent / received in collectives on this group, cumulative. */
  sent: number;
  received: number;
  calls: number;
}

/**
 * One rank's handle on one group of ranks. `rank`/`size` are within the group; `ranks` lists the members' world
 * ranks in group order. All collectives are async, complete when the group has completed them, and reject with a
 * `CollectiveError` (timeout, peer death, mismatch, unsupported op) instead of hanging.
 */
export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** World ranks of the members, indexed by group rank. */
  readonly ranks: readonly number[];
  /** Group name as the mesh calls it: "world", "ep", "fsdp", "efsdp", "dp_replicate", … */
  readonly name: string;
  /** Transport name plus profile, e.g. "inproc/xccl-2025". */
  readonly backend: string;
  readonly capabilities: Capabilities;
  readonly bytes: ByteCounters;
  /** This rank's flight recorder (shared by every group of the rank): what it is waiting in, dumps on failure. */
  readonly recorder: FlightRecorder;
  /**
   * Whether peers read a send array that lives on a SharedArrayBuffer in place instead of through a staging copy
   * (threads). Callers that own long-lived send buffers (FSDP parameter shards) then allocate them shared.
   */
  readonly peerReadsInPlace: boolean;
  /**
   * Whether the members span more than one node (decides 'single-node' capabilities such as premul_sum under
   * xccl-2026). Optional so that test doubles need not state it; BaseCommunicator always does.
   */
  readonly multiNode?: boolean;

  /** recv (size·n) ← concatenation of every rank's send (n), in group-rank order. */
  allGather<T extends CommArray>(send: T, recv: T, opts?: CallOptions): Promise<void>;
  /** recv (Σ counts) ← concatenation of rank r's send (counts[r]). counts are the same on every rank. */
  allGatherV<T extends CommArray>(send: T, recv: T, counts: readonly number[], opts?: CallOptions): Promise<void>;
  /** send (size·n) holds one block per rank; recv (n) ← op over ranks of block `rank`. */
  reduceScatter<T extends CommArray>(send: T, recv: T, op: ReduceOp, opts?: CallOptions): Promise<void>;
  /** In place: buf ← op over ranks of buf. */
  allReduce<T extends CommArray>(buf: T, op: ReduceOp, opts?: CallOptions): Promise<void>;
  /**
   * send holds sendCounts[j] elements for rank j, back to back; recv receives recvCounts[i] elements from rank i,
   * back to back. sendCounts[j] on rank i must equal recvCounts[i] on rank j.
   */
  allToAllV<T extends CommArray>(
    send: T,
    sendCounts: readonly number[],
    recv: T,
    recvCounts: readonly number[],
    opts?: CallOptions,
  ): Promise<void>;
  /** In place: buf on every rank ← buf on `root`. */
  broadcast<T extends CommArray>(buf: T, root: number, opts?: CallOptions): Promise<void>;
  barrier(opts?: CallOptions): Promise<void>;
  /**
   * Collective over this group: ranks with the same color form a new group, ordered by key, ties by rank in this
   * group (MPI_Comm_split's rule). `name` names the new group in records and errors.
   */
  split(color: number, key: number, name: string): Promise<Communicator>;
  /** Releases the group (MPI_Comm_free); further calls reject. */
  free(): Promise<void>;
  /**
   * The timeout of later calls without their own, on this group and every group split from it (a job starts with
   * torchtitan's init_timeout_seconds and moves to train_timeout_seconds after its first step). Local, not
   * collective: calls already issued keep the timeout they started with.
   */
  setDefaultTimeout(timeoutMs: number): void;
  /**
   * Adds an observer of this group's collectives (beside the transport's own and any added before); returns the
   * function that removes it. Groups split later do not inherit it.
   */
  observe(observer: CommObserver): () => void;
}
