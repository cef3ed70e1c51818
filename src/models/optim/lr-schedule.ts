// torchtitan's LambdaLR: linear warmup → stable → decay (linear | sqrt | cosine) to min_lr_factor (torchtitan-semantics.md §5.3).
// T = total steps, W = warmup (capped at T), D = round(T·decay_ratio) capped at T−W (None → T−W), stable
// St = T + 1 − W − D (the +1 is a virtual step so the lr never reaches 0). Train step n (1-based) uses lr·λ(n−1).

export type DecayType = 'linear' | 'sqrt' | 'cosine';

export interface LRScheduleConfig {
  /** lr_scheduler.total_steps or training.steps. */
  totalSteps: number;
  warmupSteps: number;
  /** null = decay over every step after warmup. */
  decayRatio: number | null;
  decayType: DecayType;
  minLrFactor: number;
}

/** Python's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

export function scheduleShape(c: LRScheduleConfig): { W: number; D: number; St: number } {
  const T = c.totalSteps;
  const W = Math.min(c.warmupSteps, T);
  const D = c.decayRatio === null ? T - W : Math.min(roundHalfEven(T * c.decayRatio), T - W);
  return { W, D, St: T + 1 - W - D };
}

/** λ(s) for the 0-based scheduler index s. */
export function lrLambda(s: number, c: LRScheduleConfig): number {
  const { W, D, St } = scheduleShape(c);
  if (s < W) return (s + 1) / W;
  if (s < W + St) return 1;
  const p = (s + 1 - W - St) / D;
  let f: number;
  switch (c.decayType) {
    case 'linear':
      f = 1 - p;
      break;
    case 'sqrt':
      f = 1 - Math.sqrt(p);
      break;
    case 'cosine':
      f = 0.5 * (1 + Math.cos(Math.PI * p));
      break;
  }
  return c.minLrFactor + (1 - c.minLrFactor) * f;
}

/** The scheduler as torch steps it: lr() is the lr the next optimizer step uses; step() advances. */
export class LRScheduler {
  private s = 0;

  constructor(
    readonly baseLr: number,
    readonly config: LRScheduleConfig,
  ) {
    for (const [k, v] of Object.entries({ totalSteps: config.totalSteps, warmupSteps: config.warmupSteps })) {
      if (!(Number.isInteger(v) && v >= 0)) throw new Error(`lr schedule: ${k} must be an integer ≥ 0 (got ${v})`);
    }
    if (config.totalSteps < 1) throw new Error(`lr schedule: total steps must be ≥ 1 (got ${config.totalSteps})`);
  }

  /** torch's get_last_lr()[0]: base lr · λ(current index). */
  lr(): number {
    return this.baseLr * lrLambda(this.s, this.config);
  }

  step(): void {
    this.s++;
  }

  get index(): number {
    return this.s;
  }

  /** Resume: the scheduler index a checkpoint recorded (steps already taken). */
  restore(index: number): void {
    if (!(Number.isInteger(index) && index >= 0)) throw new Error(`lr schedule: cannot restore index ${index}`);
    this.s = index;
  }
}
