// The liveness board of a threads world: one Int32 word per world rank in a SharedArrayBuffer that every worker
// and the launcher share. A rank sets its own word when its program ends; the launcher sets it when a worker
// exits without reporting (exception, process.exit, terminate()). Waiters read it to turn "peer never arrives"
// into an immediate, named error instead of a timeout.

export const LIFE = ['starting', 'running', 'finished', 'failed', 'died', 'stopped'] as const;
export type LifeState = (typeof LIFE)[number];

export class LifeBoard {
  readonly words: Int32Array;

  constructor(readonly sab: SharedArrayBuffer) {
    this.words = new Int32Array(sab);
  }

  static create(size: number): LifeBoard {
    return new LifeBoard(new SharedArrayBuffer(4 * size));
  }

  get(worldRank: number): LifeState {
    return LIFE[Atomics.load(this.words, worldRank)] ?? 'died';
  }

  /** Terminal states are sticky: a rank that failed stays failed even if its worker exits cleanly afterwards. */
  set(worldRank: number, s: LifeState): void {
    const cur = this.get(worldRank);
    if (cur === 'starting' || cur === 'running') Atomics.store(this.words, worldRank, LIFE.indexOf(s));
  }

  /** The rank will not take part in any further collective. */
  gone(worldRank: number): boolean {
    const s = this.get(worldRank);
    return s !== 'starting' && s !== 'running';
  }
}

export function describeLife(s: LifeState): string {
  switch (s) {
    case 'finished':
      return 'finished its program without joining this collective';
    case 'failed':
      return 'failed (its program threw)';
    case 'died':
      return 'died (worker exited or was terminated)';
    case 'stopped':
      return 'was stopped';
    default:
      return s;
  }
}
