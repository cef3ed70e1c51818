// launch() for the threads transport: one worker thread per rank, collectives through SharedArrayBuffer arenas,
// and a control surface per rank (comlink over a MessagePort). The launcher owns the liveness board and the
// arena broker; when a worker dies it marks the rank dead and poisons its groups, so every peer fails at once
// with the dead rank's name. After the first failure the others get `drainMs` to fail or finish by themselves;
// then the launcher takes their flight dumps and terminates them, so launchThreads always returns.

import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { profileByName } from '../capabilities.ts';
import type { FlightDump } from '../flight-recorder.ts';
import type { LaunchResult, RankEntry, RankOutcome, WorldOptions } from '../launch.ts';
import { ArenaBroker } from './broker.ts';
import type { RankControl, RankStatus } from './control.ts';
import { diagnoseThreads } from './diagnose.ts';
import { LifeBoard } from './life.ts';
import type { ToLauncher, ToWorker, WorkerInit } from './messages.ts';

export interface ThreadsOptions extends WorldOptions {
  /** Bytes per rank slot in every group arena (default 8 MiB, double-buffered). Larger calls run in several rounds. */
  slotBytes?: number;
  /**
   * Send arrays on a SharedArrayBuffer of at least this many bytes are read by peers in place instead of being
   * copied through the sender's slot (buffers.ts); Infinity turns this off. Default DEFAULT_DIRECT_MIN_BYTES, or
   * MOE_ACTORS_THREADS_DIRECT_MIN_BYTES.
   */
  directMinBytes?: number;
  /**
   * After the first failure the launcher asks every live rank to stop (their pending and next collectives reject);
   * ranks still running `drainMs` later (busy in JavaScript, or not in a collective) are terminated. Default 2 s.
   */
  drainMs?: number;
}

/** Two halves of 4 MiB: one phase moves up to 4 MiB per rank while the other half drains. */
export const DEFAULT_SLOT_BYTES = 8 << 20;
export const DEFAULT_DIRECT_MIN_BYTES = 64 << 10;
const CONTROL_CALL_MS = 1000;
let launches = 0;
/** A rank that reported its outcome but whose worker does not exit (a leftover timer, an open handle). */
const EXIT_GRACE_MS = 2000;

const BOOTSTRAP = new URL('./bootstrap.mjs', import.meta.url);
const WORKER_MAIN = new URL('./worker-main.ts', import.meta.url).href;

/** A running threads world: its workers, their control surfaces, and the eventual LaunchResult. */
export interface ThreadsWorld<R> {
  readonly size: number;
  readonly workers: readonly Worker[];
  /** The rank's control surface, or null once its worker exited. */
  control(rank: number): Comlink.Remote<RankControl> | null;
  /** Status of a rank, or null if it does not answer within `timeoutMs` (busy in JS, or gone). */
  status(rank: number, timeoutMs?: number): Promise<RankStatus | null>;
  /** Every live rank's flight dump (null for ranks that do not answer). */
  dumps(reason: string, timeoutMs?: number): Promise<(FlightDump | null)[]>;
  /** Kills one rank's worker as a crash would (tests). */
  terminate(rank: number): Promise<void>;
  /** Asks every live rank to stop: pending collectives reject with kind 'aborted'. */
  stop(reason: string): Promise<void>;
  /** Resolves when every rank's control surface is up (or the world ended before that). */
  readonly ready: Promise<void>;
  readonly result: Promise<LaunchResult<R>>;
}

export async function launchThreads<A, R>(opts: WorldOptions, entry: RankEntry, args: A): Promise<LaunchResult<R>> {
  return startThreads<A, R>(opts, entry, args).result;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | null> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(null), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      () => {
        clearTimeout(t);
        resolve(null);
      },
    );
  });
}

interface RankState<R> {
  worker: Worker;
  control: Comlink.Remote<RankControl> | null;
  port: MessagePort;
  outcome: RankOutcome<R> | null;
  exited: boolean;
  uncaught: Error | null;
}

export function startThreads<A, R>(opts: ThreadsOptions, entry: RankEntry, args: A): ThreadsWorld<R> {
  return new ThreadsLaunch<A, R>(opts, entry, args);
}

/**
 * One threads world's lifecycle, as a launcher sees it: `running` until the first failure, then `draining` (the
 * others are stopped and get `drainMs` to end by themselves before they are terminated), `finished` once every
 * worker exited and the result is resolved.
 */
class ThreadsLaunch<A, R> implements ThreadsWorld<R> {
  readonly size: number;
  readonly workers: readonly Worker[];
  readonly ready: Promise<void>;
  readonly result: Promise<LaunchResult<R>>;
  private phase: 'running' | 'draining' | 'finished' = 'running';
  private readonly drainMs: number;
  private readonly life: LifeBoard;
  private readonly broker = new ArenaBroker();
  private readonly worldRanks: number[];
  private readonly states: RankState<R>[];
  /** The first failure (what the others were stopped for) and every failure, in order. */
  private first: { rank: number; what: string } | null = null;
  private readonly failures: { rank: number; what: string }[] = [];
  /** Every rank's flight dump taken at the first failure: where they stood when it happened. */
  private snapshot: (FlightDump | null)[];
  private snapshotTaken: Promise<void> | null = null;
  private drainTimer: ReturnType<typeof setTimeout> | null = null;
  private resolveResult!: (r: LaunchResult<R>) => void;
  private resolveReady!: () => void;
  private started = 0;

  constructor(opts: ThreadsOptions, entry: RankEntry, args: A) {
    const size = opts.size;
    if (!Number.isInteger(size) || size < 1)
      throw new Error(`threads transport: size must be a positive integer (got ${size})`);
    this.size = size;
    const profile = profileByName(opts.profile ?? 'full');
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const slotBytes = opts.slotBytes ?? DEFAULT_SLOT_BYTES;
    this.drainMs = opts.drainMs ?? 2000;
    const envDirect = process.env.MOE_ACTORS_THREADS_DIRECT_MIN_BYTES;
    const directMinBytes =
      opts.directMinBytes ??
      (envDirect !== undefined && envDirect !== '' ? Number(envDirect) : DEFAULT_DIRECT_MIN_BYTES);
    const buffersChannel = `moe-actors/threads/${process.pid}/${launches++}/${Math.random().toString(36).slice(2)}`;
    this.life = LifeBoard.create(size);
    this.worldRanks = Array.from({ length: size }, (_, i) => i);
    const world = this.broker.create('name:world', size, slotBytes, this.worldRanks);
    this.snapshot = new Array(size).fill(null);
    this.result = new Promise<LaunchResult<R>>((res) => (this.resolveResult = res));
    this.ready = new Promise<void>((res) => (this.resolveReady = res));

    this.states = this.worldRanks.map((rank) => {
      const { port1, port2 } = new MessageChannel();
      const init: WorkerInit = {
        __entry: WORKER_MAIN,
        rank,
        size,
        module: entry.module,
        exportName: entry.exportName ?? 'rankMain',
        args,
        lifeSab: this.life.sab,
        world,
        profile: profile.name,
        timeoutMs,
        flightEntries: opts.flightEntries ?? 2000,
        dumpDir: opts.dumpDir ?? null,
        ranksPerNode: opts.ranksPerNode ?? size,
        slotBytes,
        buffersChannel,
        directMinBytes,
        control: port2,
      };
      const worker = new Worker(BOOTSTRAP, { workerData: init, transferList: [port2], name: `rank ${rank}` });
      return {
        worker,
        control: Comlink.wrap<RankControl>(nodeEndpoint(port1)),
        port: port1,
        outcome: null,
        exited: false,
        uncaught: null,
      };
    });
    this.workers = this.states.map((s) => s.worker);
    this.states.forEach((s, rank) => this.listen(s, rank));

    const signal = opts.signal;
    if (signal) {
      // A rank whose control surface is not up yet could not be told: wait for all of them (or the world's end).
      const onAbort = () => void this.ready.then(() => this.stop(String(signal.reason ?? 'aborted')));
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        void this.result.finally(() => signal.removeEventListener('abort', onAbort));
      }
    }
  }

  control(rank: number): Comlink.Remote<RankControl> | null {
    return this.states[rank]?.control ?? null;
  }

  async status(rank: number, ms = CONTROL_CALL_MS): Promise<RankStatus | null> {
    const c = this.states[rank]?.control;
    return c ? withTimeout(c.status() as Promise<RankStatus>, ms) : null;
  }

  dumps(reason: string, ms = CONTROL_CALL_MS): Promise<(FlightDump | null)[]> {
    return Promise.all(
      this.worldRanks.map(async (r) => {
        const c = this.states[r]!.control;
        return c && !this.states[r]!.exited ? withTimeout(c.dump(reason) as Promise<FlightDump>, ms) : null;
      }),
    );
  }

  async terminate(rank: number): Promise<void> {
    await this.states[rank]?.worker.terminate();
  }

  async stop(reason: string): Promise<void> {
    await Promise.all(
      this.liveRanks().map((r) =>
        withTimeout(this.states[r]!.control?.stop(reason) ?? Promise.resolve(), CONTROL_CALL_MS),
      ),
    );
  }

  private liveRanks(): number[] {
    return this.worldRanks.filter((r) => !this.states[r]!.exited);
  }

  private listen(s: RankState<R>, rank: number): void {
    const reply = (m: ToWorker) => s.worker.postMessage(m);
    s.worker.on('message', (m: ToLauncher) => {
      switch (m.type) {
        case 'arena-request':
          try {
            reply({
              type: 'arena-reply',
              id: m.id,
              handle: this.broker.create(m.key, m.size, m.slotBytes, m.worldRanks),
            });
          } catch (e) {
            reply({ type: 'arena-error', id: m.id, error: (e as Error).message });
          }
          break;
        case 'arena-release':
          this.broker.release(m.arenaId);
          break;
        case 'started':
          if (++this.started === this.size) this.resolveReady();
          break;
        case 'result':
          s.outcome = m.ok
            ? { rank, ok: true, value: m.value as R }
            : { rank, ok: false, error: m.error, dump: m.dump };
          if (!m.ok) this.failed(rank, `failed: ${m.error.split('\n', 1)[0]}`);
          setTimeout(() => {
            if (!s.exited) void s.worker.terminate();
          }, EXIT_GRACE_MS).unref();
          break;
      }
    });
    s.worker.on('error', (e) => {
      s.uncaught = e;
    });
    s.worker.on('exit', (code) => {
      s.exited = true;
      s.control = null;
      s.port.close();
      if (!s.outcome) {
        const why = s.uncaught
          ? `died: uncaught ${s.uncaught.stack ?? s.uncaught.message}`
          : `died: its worker exited with code ${code} before the program finished (process.exit, worker.terminate() or a crash)`;
        this.life.set(rank, 'died');
        this.broker.poisonGroupsOf(rank, 'died');
        s.outcome = { rank, ok: false, error: why };
        this.failed(rank, why.split('\n', 1)[0]!);
      }
      if (this.states.every((x) => x.exited)) {
        this.resolveReady();
        void this.finish();
      }
    });
  }

  private failed(rank: number, what: string): void {
    this.failures.push({ rank, what });
    if (this.phase !== 'running') return;
    this.phase = 'draining';
    this.first = { rank, what };
    // Where every other rank stood when the first failure happened — the view that explains a hang — then stop
    // them all: the run has failed, and a rank not waiting on the failed one would otherwise run on.
    this.snapshotTaken = this.dumps(`rank ${rank} ${what}`).then(async (d) => {
      this.snapshot = d;
      await this.stop(`rank ${rank} ${what.split(':', 1)[0]}`);
    });
    this.drainTimer = setTimeout(() => void this.drain(), this.drainMs);
  }

  /** Ranks still running `drainMs` after the first failure: their dumps are taken and their workers terminated. */
  private async drain(): Promise<void> {
    const left = this.liveRanks();
    if (left.length === 0) return;
    const late = await this.dumps(`still running ${this.drainMs} ms after rank ${this.first?.rank} failed`);
    for (const r of left) {
      const s = this.states[r]!;
      if (s.exited || s.outcome) continue;
      s.outcome = {
        rank: r,
        ok: false,
        error: `stopped by the launcher: still running ${this.drainMs} ms after rank ${this.first?.rank} failed (${late[r] ? 'it answered its control port' : 'its control port did not answer: busy in JavaScript?'})`,
        dump: late[r] ?? this.snapshot[r] ?? undefined,
      };
    }
    await Promise.all(left.map((r) => this.states[r]!.worker.terminate()));
  }

  private async finish(): Promise<void> {
    if (this.drainTimer) clearTimeout(this.drainTimer);
    if (this.snapshotTaken) await this.snapshotTaken;
    this.phase = 'finished';
    const outcomes = this.states.map((s) => s.outcome!);
    if (outcomes.every((o) => o.ok)) {
      this.resolveResult({ outcomes });
      return;
    }
    const lastCalls = new Map<number, string[]>();
    for (const o of outcomes) if (!o.ok && !o.dump) lastCalls.set(o.rank, this.broker.lastCalls(o.rank));
    this.resolveResult({
      outcomes,
      diagnosis: diagnoseThreads({
        size: this.size,
        failures: this.failures,
        outcomes,
        snapshot: this.snapshot,
        lastCalls,
      }),
    });
  }
}
