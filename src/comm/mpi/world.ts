// This process's rank of an MPI job: initializes MPI (THREAD_MULTIPLE requested), learns which ranks share a node,
// and owns what must happen when something goes wrong. The rule is: no rank is ever left waiting. A rank whose
// program fails, whose collective times out, or that exits mid-run (process.exit, an uncaught error, SIGINT or
// SIGTERM) writes its flight dump, prints where it stood, tells the other ranks why over the fault channel, and
// calls MPI_Abort, which makes Hydra tear the whole job down. Ranks that hear such a note reject what they wait in,
// write their own dumps and print their own positions before the teardown reaches them.

import { readFileSync } from 'node:fs';
import type { Profile } from '../capabilities.ts';
import { CollectiveError } from '../errors.ts';
import { installDumpOnFailure, writeDumpSync } from '../flight-dump-io.ts';
import { FlightRecorder, type FlightDump } from '../flight-recorder.ts';
import type { RankOutcome } from '../launch.ts';
import { loadMpi, type MpiBinding, type MpiInitInfo } from './native.ts';
import { Poller, type FaultNote, type WaitLabel } from './poller.ts';

/** Prefix of the stdout line carrying this rank's outcome as JSON, for whoever started mpiexec (spawn.ts). */
export const OUTCOME_TAG = 'MOE_RANK_OUTCOME ';

/** How long a failing rank waits after notifying the others before it aborts the job, so they can report. */
const NOTIFY_GRACE_MS = 600;
/** How long a rank that heard a note waits for the failing rank's abort before aborting by itself. */
const TEARDOWN_WAIT_MS = 3000;
/** Idle check of the fault channel, for ranks that are computing rather than waiting in a collective. */
const IDLE_FAULT_POLL_MS = 100;
/** How often a rank waiting in a collective checks that the ranks on its node still live (see watchPeers). */
const PEER_WATCH_MS = 200;

/**
 * Whether a process still runs: its /proc entry exists and is no zombie (a SIGKILLed rank is a zombie until
 * Hydra's proxy reaps it). Without /proc, signal 0 tells existence only.
 */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    try {
      process.kill(pid, 0);
      return true;
    } catch (k) {
      return (k as NodeJS.ErrnoException).code !== 'ESRCH';
    }
  }
}

export interface MpiWorldOptions {
  /** 'ccl': the same MPI job, with oneCCL carrying the collectives (src/comm/ccl/); names its lines and records. */
  transport?: 'mpi' | 'ccl';
  profile: Profile;
  timeoutMs: number;
  flightEntries: number;
  dumpDir: string | null;
}

const sleepSync = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

export class MpiWorld {
  readonly b: MpiBinding;
  readonly info: MpiInitInfo;
  readonly recorder: FlightRecorder;
  readonly poller: Poller;
  readonly opts: MpiWorldOptions;
  /** Node of every world rank (the world rank of the node's first rank); filled by exchangeNodes(). */
  nodeOf: Int32Array;
  /** Set once this rank started failing; later failures only add to the log. */
  private failing: string | null = null;
  private finalized = false;
  private idle: ReturnType<typeof setInterval> | null = null;
  private watch: ReturnType<typeof setInterval> | null = null;

  private constructor(b: MpiBinding, info: MpiInitInfo, opts: MpiWorldOptions) {
    this.b = b;
    this.info = info;
    this.opts = opts;
    this.recorder = new FlightRecorder(
      info.rank,
      info.size,
      `${opts.transport ?? 'mpi'}/${opts.profile.name}`,
      opts.flightEntries,
    );
    this.poller = new Poller(b, (f) => this.onFault(f));
    this.nodeOf = new Int32Array(info.size).fill(info.nodeLeader);
  }

  /**
   * Loads the binding (or throws MpiUnavailableError) and initializes MPI. The ccl transport passes its own
   * binding, which carries the MPI functions too (one request table for MPI and oneCCL operations).
   */
  static binding(): MpiBinding {
    return loadMpi();
  }

  static init(opts: MpiWorldOptions, b: MpiBinding = loadMpi()): MpiWorld {
    const info = b.init();
    const ompi = Number(process.env.OMPI_COMM_WORLD_SIZE ?? 0);
    if (info.size === 1 && ompi > 1) {
      b.finalize();
      throw new Error(
        `this process was started by Open MPI's mpiexec (OMPI_COMM_WORLD_SIZE=${ompi}), but the binding is built on MPICH, so every ` +
          `process is a separate size-1 job. Fix: launch with \`mpiexec.mpich -n ${ompi} …\` (on Debian, plain mpiexec is Open MPI).`,
      );
    }
    if (info.threadLevelProvided !== 'multiple') {
      console.error(
        `moe-actors mpi rank ${info.rank}: MPI provides thread level "${info.threadLevelProvided}" (MULTIPLE was requested); ` +
          'only the main thread may call MPI, so do not use the transport from worker threads',
      );
    }
    const w = new MpiWorld(b, info, opts);
    if (opts.dumpDir) installDumpOnFailure(w.recorder, opts.dumpDir);
    w.installGuards();
    return w;
  }

  /** Transport name for this rank's lines: mpi or ccl. */
  get name(): string {
    return this.opts.transport ?? 'mpi';
  }

  get rank(): number {
    return this.info.rank;
  }

  get size(): number {
    return this.info.size;
  }

  /**
   * Learns every rank's node and process id with a polled, timed all_gather (a missing rank is a timeout, not a
   * hang), then watches the ranks of its own node.
   */
  async exchangeNodes(): Promise<void> {
    const mine = new Int32Array([this.info.nodeLeader, process.pid]);
    const all = new Int32Array(2 * this.size);
    const req = this.b.iallgather(0, mine, all);
    await this.timedWait(
      req,
      { group: 'world', op: 'all_gather(node ids)', seq: 0, rank: this.rank },
      8 * this.size,
      'the start-up exchange of node ids',
    );
    this.nodeOf = all.filter((_, i) => i % 2 === 0);
    this.watchPeers(all.filter((_, i) => i % 2 === 1));
  }

  /**
   * A SIGKILLed rank (kill -9, the OOM killer) sends no note, and MPI may never fail the collectives that wait for
   * it. So a rank waiting in a collective checks that the ranks on its node still run; when one is gone, it
   * reports which rank died and where it waited, and aborts the job. (Ranks on other nodes: the collective's
   * timeout, or the note of a rank on the dead rank's node.) Only while waiting: after MPI_Finalize a peer may
   * leave before this rank has finished its own last steps.
   */
  private watchPeers(pids: Int32Array): void {
    const peers = [...pids.keys()].filter(
      (r) => r !== this.rank && this.nodeOf[r] === this.nodeOf[this.rank] && pids[r]! > 0,
    );
    if (peers.length === 0) return;
    this.watch = setInterval(() => {
      if (this.failing !== null || this.finalized || this.poller.waiting().length === 0) return;
      const dead = peers.find((r) => !processAlive(pids[r]!));
      if (dead === undefined) return;
      clearInterval(this.watch!);
      this.onPeerGone(dead, pids[dead]!);
    }, PEER_WATCH_MS);
    this.watch.unref();
  }

  private onPeerGone(dead: number, pid: number): void {
    const where = this.position();
    const why = `rank ${dead} died (its process ${pid} is gone without a word: killed by a signal such as SIGKILL, or by the OOM killer)`;
    this.rejectWaiters(why);
    // A note, so that ranks on other nodes learn it before their timeouts; then this rank aborts the job.
    void this.fail(`CollectiveError[peer-dead]: this rank ${where} when ${why}`, true, '');
  }

  /** Waits for an MPI request outside any communicator's numbering (start-up, bootstrap), within the world timeout. */
  async timedWait(req: number, label: WaitLabel, bytes: number, what: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new CollectiveError(
              'timeout',
              `rank ${this.rank}: not every member of group ${label.group} joined ${what} within ${this.opts.timeoutMs} ms`,
              { group: label.group },
            ),
          ),
        this.opts.timeoutMs,
      );
    });
    try {
      await Promise.race([this.poller.wait(req, label, bytes), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  multiNode(worldRanks: readonly number[]): boolean {
    return new Set(worldRanks.map((r) => this.nodeOf[r])).size > 1;
  }

  /** Where this rank stands, for notes and reports: the collectives it waits in, else the last it completed. */
  position(): string {
    const w = this.poller.waiting();
    if (w.length > 0) return `was waiting in ${w.map((l) => `${l.op} #${l.seq} on group ${l.group}`).join(', ')}`;
    const entries = this.recorder.entries();
    const last = [...entries].reverse().find((e) => e.state === 'completed');
    return last
      ? `was not in a collective (last completed ${last.op} #${last.seq} on group ${last.group})`
      : 'had not completed any collective';
  }

  private writeDump(dump: FlightDump): string | null {
    if (!this.opts.dumpDir) return null;
    try {
      return writeDumpSync(this.opts.dumpDir, dump);
    } catch (e) {
      console.error(
        `moe-actors ${this.name} rank ${this.rank}: could not write its flight dump to ${this.opts.dumpDir}: ${(e as Error).message}`,
      );
      return null;
    }
  }

  /**
   * This rank's failed outcome, with its dump also written to the dump directory. The dump is taken once so that
   * the file and the outcome the launcher receives record the same moment.
   */
  recordFailure(
    error: string,
    reason: string,
  ): { outcome: { rank: number; ok: false; error: string; dump: FlightDump }; file: string | null } {
    const dump = this.recorder.dump(reason);
    const file = this.writeDump(dump);
    return { outcome: { rank: this.rank, ok: false, error, dump }, file };
  }

  private printOutcome(outcome: RankOutcome<unknown>): void {
    // The JSON line (with the flight dump: hundreds of KB) is for spawn.ts, which reads it from mpiexec's stdout and
    // marks its jobs with MOE_ACTORS_MPI_JOB. Under a user's own mpiexec it would reach the console as raw JSON;
    // the rank's report on stderr and its dump file say the same in words.
    if (!process.env.MOE_ACTORS_MPI_JOB) return;
    process.stdout.write(OUTCOME_TAG + JSON.stringify(outcome) + '\n');
  }

  private report(outcome: RankOutcome<unknown>, line: string): void {
    console.error(`moe-actors ${this.name} rank ${this.rank}: ${line}`);
    this.printOutcome(outcome);
  }

  /**
   * This rank failed: record, report, tell the others, abort the job. Never resolves. `note` false when the failure
   * is only the echo of another rank's note (that rank aborts the job; we just report and wait for the teardown).
   */
  /** `where`: this rank's position for the report line ('' when the error already says it). */
  async fail(error: string, note = true, where = this.position()): Promise<never> {
    if (this.failing !== null) return new Promise<never>(() => {});
    const first = error.split('\n', 1)[0]!;
    this.failing = first;
    const { outcome, file: dumpFile } = this.recordFailure(error, `rank ${this.rank} failed: ${first}`);
    this.report(outcome, `${first}${where ? `; it ${where}` : ''}${dumpFile ? `; flight dump: ${dumpFile}` : ''}`);
    if (this.size === 1) {
      this.b.abort(1);
      return new Promise<never>(() => {});
    }
    if (note) {
      this.b.faultNotify(`rank ${this.rank} failed: ${first}`, 200);
      console.error(
        `moe-actors ${this.name} rank ${this.rank}: aborting the MPI job (MPI_Abort) in ${NOTIFY_GRACE_MS} ms so that no rank waits forever`,
      );
      await new Promise((r) => setTimeout(r, NOTIFY_GRACE_MS));
      this.b.abort(1);
    } else {
      await new Promise((r) => setTimeout(r, TEARDOWN_WAIT_MS));
      this.b.abort(1);
    }
    return new Promise<never>(() => {});
  }

  /** Every collective this rank waits in fails as peer-dead, naming where it waited and `why` (which rank, how). */
  private rejectWaiters(why: string): void {
    this.poller.rejectAll(
      (l) =>
        new CollectiveError(
          'peer-dead',
          `rank ${this.rank} was waiting in ${l.op} #${l.seq} on group ${l.group} when ${why}`,
          {
            group: l.group,
            seq: l.seq,
            rank: l.rank,
          },
        ),
    );
  }

  /** Another rank is aborting the job: stop waiting, say where this rank stood, and let the teardown come. */
  private onFault(f: FaultNote): void {
    if (this.failing !== null) return;
    const where = this.position();
    const why = `rank ${f.source} reported: ${f.message}`;
    const waiting = this.poller.waiting();
    this.rejectWaiters(why);
    const head = waiting.length > 0 ? `CollectiveError[peer-dead]: ${why}` : `stopped because ${why}`;
    void this.fail(`${head} (this rank ${where})`, false);
  }

  /** A collective's timeout fired: the job cannot recover (MPI cannot cancel a collective), so fail it soon. */
  timedOut(message: string): void {
    // Let the rejection reach the program first, so its own catch/finally runs and launchMpi reports it; if the
    // program swallows the error, abort anyway.
    setTimeout(() => void this.fail(`CollectiveError[timeout]: ${message}`), 50);
  }

  async finalize(): Promise<void> {
    if (this.finalized) return;
    this.finalized = true;
    if (this.idle) clearInterval(this.idle);
    if (this.watch) clearInterval(this.watch);
    this.b.finalize();
  }

  private installGuards(): void {
    this.idle = setInterval(() => {
      if (this.poller.waiting().length === 0) this.poller.checkFaults();
    }, IDLE_FAULT_POLL_MS);
    this.idle.unref();
    // A rank that leaves without MPI_Finalize makes Hydra kill the job — with exit status 0 if it called
    // process.exit(0), which would pass a failed run off as a success. Abort with a nonzero code instead, after
    // telling the others why.
    process.on('exit', (code) => {
      if (this.finalized) return;
      const st = this.b.state();
      if (!st.initialized || st.finalized) return;
      if (this.failing === null) {
        const why = `rank ${this.rank} exited (exit code ${code}) before its program finished and MPI was finalized; it ${this.position()}`;
        this.printOutcome(this.recordFailure(why, why).outcome);
        console.error(`moe-actors ${this.name} rank ${this.rank}: ${why}; aborting the MPI job`);
        if (this.size > 1) {
          this.b.faultNotify(why, 200);
          sleepSync(NOTIFY_GRACE_MS);
        }
      }
      this.b.abort(code === 0 ? 1 : code);
    });
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        const why = `rank ${this.rank} received ${sig}; it ${this.position()}`;
        this.failing ??= why;
        const { outcome, file } = this.recordFailure(why, why);
        this.printOutcome(outcome);
        console.error(`moe-actors ${this.name} rank ${this.rank}: ${why}${file ? `; flight dump: ${file}` : ''}`);
        // Give Hydra a moment to forward these lines before the exit guard aborts the job.
        sleepSync(100);
        process.exit(sig === 'SIGINT' ? 130 : sig === 'SIGHUP' ? 129 : 143);
      });
    }
  }
}
