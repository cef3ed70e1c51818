// What runs inside each rank's worker thread: build the rank's world communicator on the shared world arena, serve
// the control surface over comlink, run the rank program, and report its outcome to the launcher. On failure the
// rank marks itself failed on the liveness board and poisons its groups first, so peers waiting on it fail at
// once with its name instead of waiting for their timeouts.

import { workerData } from 'node:worker_threads';
import * as Comlink from 'comlink';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { profileByName } from '../capabilities.ts';
import { rankErrorText } from '../errors.ts';
import { installDumpOnFailure, writeDumpSync } from '../flight-dump-io.ts';
import { FlightRecorder, type FlightDump } from '../flight-recorder.ts';
import type { RankContext } from '../launch.ts';
import { loadRankMain } from '../rank-program.ts';
import { BrokerClient } from './broker-client.ts';
import { PeerBuffers } from './buffers.ts';
import { ThreadsCommunicator } from './communicator.ts';
import { rankControl } from './control.ts';
import { LifeBoard } from './life.ts';
import type { WorkerInit } from './messages.ts';
import { RankRuntime } from './runtime.ts';

const init = workerData as WorkerInit;
const profile = profileByName(init.profile);
const life = new LifeBoard(init.lifeSab);
const recorder = new FlightRecorder(init.rank, init.size, `threads/${profile.name}`, init.flightEntries);
const broker = new BrokerClient();
const runtime = new RankRuntime({
  worldRank: init.rank,
  life,
  broker,
  recorder,
  ranksPerNode: init.ranksPerNode,
  slotBytes: init.slotBytes,
  buffers: Number.isFinite(init.directMinBytes) ? new PeerBuffers(init.rank, init.buffersChannel) : null,
  directMinBytes: init.directMinBytes,
});

function writeDump(dump: FlightDump): void {
  if (!init.dumpDir) return;
  try {
    writeDumpSync(init.dumpDir, dump);
  } catch (e) {
    console.error(`rank ${init.rank}: could not write flight dump to ${init.dumpDir}: ${(e as Error).message}`);
  }
}

async function main(): Promise<void> {
  if (init.dumpDir) installDumpOnFailure(recorder, init.dumpDir);
  Comlink.expose(rankControl(runtime), nodeEndpoint(init.control));
  life.set(init.rank, 'running');
  broker.post({ type: 'started' });
  try {
    const rankMain = await loadRankMain<unknown, unknown>({ module: init.module, exportName: init.exportName });
    const world = new ThreadsCommunicator({
      runtime,
      arena: init.world,
      rank: init.rank,
      ranks: Array.from({ length: init.size }, (_, i) => i),
      name: 'world',
      profile,
      timeoutMs: init.timeoutMs,
    });
    const ctx: RankContext<unknown> = {
      rank: init.rank,
      size: init.size,
      world,
      recorder,
      transport: 'threads',
      args: init.args,
    };
    const value = await rankMain(ctx);
    try {
      broker.post({ type: 'result', ok: true, value });
    } catch (e) {
      throw new Error(
        `rank ${init.rank} returned a value that cannot be sent to the launcher (structured clone): ${(e as Error).message}`,
      );
    }
    life.set(init.rank, 'finished');
  } catch (e) {
    const msg = rankErrorText(e);
    const dump = recorder.dump(`rank ${init.rank} failed: ${msg.split('\n', 1)[0]}`);
    // Report before waking the peers, so the launcher hears the cause before the consequences.
    broker.post({ type: 'result', ok: false, error: msg, dump });
    life.set(init.rank, 'failed');
    runtime.poisonAll('failed');
    writeDump(dump);
  } finally {
    // Closing the control port leaves nothing on this thread's loop, so the worker exits by itself.
    init.control.close();
  }
}

await main();
