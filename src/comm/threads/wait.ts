// Waiting on one Int32 word of a SharedArrayBuffer without freezing the event loop: a short spin (a peer is
// often microseconds away), then Atomics.waitAsync in bounded slices, so timers (the collective's timeout), the
// comlink control port and 'stop' keep working while a rank waits.
//
// Trap: a pending Atomics.waitAsync does not keep a Node worker alive; a worker whose only pending work is such
// a wait exits with "unsettled top-level await" (exit code 13). While any wait is in flight we hold a ref'd
// interval (one for all waits of the thread).

type WaitAsyncResult =
  | { async: false; value: 'not-equal' | 'timed-out' }
  | { async: true; value: Promise<'ok' | 'timed-out'> };
const waitAsync = (
  Atomics as unknown as { waitAsync(a: Int32Array, i: number, v: number, t?: number): WaitAsyncResult }
).waitAsync;

export const HAS_WAIT_ASYNC = typeof waitAsync === 'function';

let holders = 0;
let keep: ReturnType<typeof setInterval> | null = null;

function hold(): void {
  if (holders++ === 0) keep = setInterval(() => {}, 1 << 30);
}

function release(): void {
  if (--holders === 0 && keep) {
    clearInterval(keep);
    keep = null;
  }
}

const SPIN = 256;

/**
 * Returns once `words[index]` differs from `seen`, a notify arrived, or `sliceMs` passed. The caller re-checks
 * its condition (and any reason to give up) in a loop; this never waits longer than one slice.
 */
export async function waitChange(words: Int32Array, index: number, seen: number, sliceMs: number): Promise<void> {
  for (let i = 0; i < SPIN; i++) if (Atomics.load(words, index) !== seen) return;
  if (!HAS_WAIT_ASYNC) {
    // Node without waitAsync: block for at most a short slice so the loop still turns.
    Atomics.wait(words, index, seen, Math.min(sliceMs, 5));
    return;
  }
  const r = waitAsync(words, index, seen, sliceMs);
  if (!r.async) return;
  hold();
  try {
    await r.value;
  } finally {
    release();
  }
}
