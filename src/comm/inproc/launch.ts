// launch() for the inproc transport: every rank's program runs as an async task on this event loop, against its
// own world communicator, with its own structured clone of the arguments (as threads and mpi would see them).

import { installDumpOnFailure } from '../flight-dump-io.ts';
import { diagnose } from '../inspect.ts';
import type { LaunchResult, RankContext, RankEntry, RankMain, RankOutcome, WorldOptions } from '../launch.ts';
import { loadRankMain } from '../rank-program.ts';
import { createInprocWorld, type InprocWorld, type InprocWorldOptions } from './world.ts';

export { createInprocWorld, InprocWorld, type InprocWorldOptions } from './world.ts';

const firstLine = (s: string) => s.split('\n', 1)[0]!;
const errorText = (e: unknown) => (e instanceof Error ? e.message : String(e));

export async function launchInproc<A, R>(
  opts: WorldOptions,
  entry: RankEntry,
  args: A,
  extra: Omit<InprocWorldOptions, keyof WorldOptions> = {},
): Promise<LaunchResult<R>> {
  const main = await loadRankMain<A, R>(entry);
  const world = createInprocWorld(opts.size, {
    profile: opts.profile,
    timeoutMs: opts.timeoutMs,
    seed: opts.seed,
    faults: opts.faults,
    ranksPerNode: opts.ranksPerNode,
    flightEntries: opts.flightEntries,
    ...extra,
  });
  const signal = opts.signal;
  const onAbort = () => world.interrupt(String(signal?.reason ?? 'aborted'));
  if (signal?.aborted) onAbort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await runRanks(world, main, args, opts.dumpDir);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** Runs `main` on every rank of `world` and collects outcomes, dumps of failed ranks and the diagnosis. */
export async function runRanks<A, R>(
  world: InprocWorld,
  main: RankMain<A, R>,
  args: A,
  dumpDir?: string,
): Promise<LaunchResult<R>> {
  const uninstall = dumpDir ? world.recorders.map((rec) => installDumpOnFailure(rec, dumpDir)) : [];
  // Collective timers are unref'd so a finished process can exit; while ranks run, a timeout must still fire.
  const keepAlive = setInterval(() => {}, 1 << 30);
  const outcomes: (RankOutcome<R> | undefined)[] = new Array(world.size);
  let finishAll: () => void = () => {};
  const allDone = new Promise<void>((resolve) => (finishAll = resolve));
  let left = world.size;
  let watchdog: ReturnType<typeof setTimeout> | undefined;

  const finish = (r: number, o: RankOutcome<R>, exitWhy: string) => {
    if (outcomes[r]) return;
    outcomes[r] = o;
    world.exit(r, exitWhy);
    if (--left === 0) finishAll();
    else armWatchdog();
  };
  // A rank whose program waits on something that is not a collective (a promise that never settles) would keep
  // the launch waiting forever once the others have ended: after a collective timeout with no collective in
  // flight, it is given up on.
  const armWatchdog = () => {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => {
      const ended = outcomes.flatMap((o, r) => (o ? [r] : []));
      for (let r = 0; r < world.size; r++) {
        if (outcomes[r] || world.isWaiting(r)) continue;
        const msg =
          `rank ${r} did not finish within ${world.timeoutMs} ms after ranks ${ended.join(',')} ended, and it is not waiting in a collective: ` +
          `its program waits on something else (a promise that never settles, a stuck worker?)`;
        finish(r, { rank: r, ok: false, error: msg, dump: world.recorders[r]!.dump(msg) }, `gave up on (${msg})`);
      }
      if (left > 0) armWatchdog();
    }, world.timeoutMs);
    watchdog.unref?.();
  };

  // A world where no rank is in a collective and nothing happens — no collective issued, no rank finished — while
  // the event loop is idle: every rank waits on something that will never settle (a protocol event that was
  // dropped, a promise nobody resolves). Collective timeouts cannot see it, so it is given up on after one
  // collective timeout of such stillness. A late timer means the loop was busy computing, which is progress.
  let lastIssued = -1;
  let lastLeft = left;
  let stillSince: number | null = null;
  let expected = performance.now() + world.timeoutMs / 4;
  const stall = setInterval(() => {
    const now = performance.now();
    const late = now - expected > world.timeoutMs / 8;
    expected = now + world.timeoutMs / 4;
    const issued = world.recorders.reduce((a, rec) => a + rec.issued, 0);
    // outcomes is sparse until ranks finish: flatMap would skip the holes.
    const running = Array.from({ length: world.size }, (_, r) => r).filter((r) => !outcomes[r]);
    const waiting = running.some((r) => world.isWaiting(r));
    if (late || waiting || issued !== lastIssued || left !== lastLeft || running.length === 0) {
      lastIssued = issued;
      lastLeft = left;
      stillSince = null;
      return;
    }
    stillSince ??= now;
    if (now - stillSince < world.timeoutMs) return;
    for (const r of running) {
      const msg =
        `rank ${r} made no progress for ${Math.round(now - stillSince)} ms and no rank is waiting in a collective: ` +
        `every running rank waits on something that is not a collective (a dropped protocol event, a promise that never settles)`;
      finish(r, { rank: r, ok: false, error: msg, dump: world.recorders[r]!.dump(msg) }, `gave up on (${msg})`);
    }
  }, world.timeoutMs / 4);
  stall.unref?.();

  world.comms.forEach((comm, r) => {
    const ctx: RankContext<A> = {
      rank: r,
      size: world.size,
      world: comm,
      recorder: world.recorders[r]!,
      transport: 'inproc',
      args: structuredClone(args),
    };
    Promise.resolve()
      .then(() => main(ctx))
      .then((value) => {
        if (!world.isAlive(r))
          throw new Error(`rank ${r} returned after it was killed: ${world.firstFailureReport ?? 'killed'}`);
        finish(r, { rank: r, ok: true, value }, 'finished its program');
      })
      .catch((err: unknown) => {
        const msg = errorText(err);
        finish(
          r,
          { rank: r, ok: false, error: msg, dump: world.recorders[r]!.dump(`rank ${r} failed: ${firstLine(msg)}`) },
          `failed (${firstLine(msg)})`,
        );
      });
  });

  try {
    await allDone;
    const done = outcomes as RankOutcome<R>[];
    const unapplied = world.unappliedFaults();
    const remarks = unapplied.length ? { remarks: unapplied.map((u) => `fault injection: ${u}`) } : {};
    if (done.every((o) => o.ok)) return { outcomes: done, ...remarks };
    const dumps = world.dumps('launch ended with failed ranks');
    const notes = new Map<number, string>();
    for (const o of done) notes.set(o.rank, o.ok ? 'finished its program' : `failed: ${firstLine(o.error)}`);
    const text = diagnose(dumps, { notes }).text;
    const first = world.firstFailureReport;
    return { outcomes: done, diagnosis: first ? `first failure: ${first}\n${text}` : text, ...remarks };
  } finally {
    // A delay fault's pending timer would keep the process alive past the end of the run.
    world.dropDelayed();
    clearTimeout(watchdog);
    clearInterval(stall);
    clearInterval(keepAlive);
    for (const u of uninstall) u();
  }
}
