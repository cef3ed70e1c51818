// Per-worker state shared by all of a rank's communicators: its world rank, the liveness board, the broker
// client, the stop flag, and the set of live groups (so that 'stop' or a failure can poison them all).

import type { FlightRecorder } from '../flight-recorder.ts';
import type { PoisonKind } from './arena.ts';
import type { BrokerClient } from './broker-client.ts';
import type { PeerBuffers } from './buffers.ts';
import type { LifeBoard } from './life.ts';

export interface RankRuntimeInit {
  worldRank: number;
  life: LifeBoard;
  broker: BrokerClient;
  recorder: FlightRecorder;
  ranksPerNode: number;
  slotBytes: number;
  /** Registration of send buffers peers read in place (null: every call stages through the slots). */
  buffers?: PeerBuffers | null;
  /** Smallest SharedArrayBuffer-backed send array (bytes) lent to peers in place. */
  directMinBytes?: number;
}

/** What the runtime needs of a communicator; implemented by ThreadsCommunicator. */
export interface RuntimeMember {
  poison(kind: PoisonKind): void;
  readonly name: string;
  currentWait(): { group: string; op: string; seq: number; phase: number; waitingFor: number[] } | null;
}

export class RankRuntime {
  readonly worldRank: number;
  readonly life: LifeBoard;
  readonly broker: BrokerClient;
  readonly recorder: FlightRecorder;
  readonly ranksPerNode: number;
  readonly slotBytes: number;
  readonly buffers: PeerBuffers | null;
  readonly directMinBytes: number;
  readonly members = new Set<RuntimeMember>();
  stopReason: string | null = null;

  constructor(init: RankRuntimeInit) {
    this.worldRank = init.worldRank;
    this.life = init.life;
    this.broker = init.broker;
    this.recorder = init.recorder;
    this.ranksPerNode = init.ranksPerNode;
    this.slotBytes = init.slotBytes;
    this.buffers = init.buffers ?? null;
    this.directMinBytes = init.directMinBytes ?? Infinity;
  }

  nodeOf(worldRank: number): number {
    return Math.floor(worldRank / this.ranksPerNode);
  }

  stop(reason: string): void {
    if (this.stopReason !== null) return;
    this.stopReason = reason;
    this.poisonAll('stopped');
  }

  poisonAll(kind: PoisonKind): void {
    for (const m of this.members) m.poison(kind);
  }
}
