// Worker side of the arena broker (broker.ts): asks the launcher over parentPort and waits for the reply with a
// timeout, so a split never hangs on a launcher that went away.

import { parentPort } from 'node:worker_threads';
import { CollectiveError } from '../errors.ts';
import type { ArenaHandle } from './arena.ts';
import type { ToLauncher, ToWorker } from './messages.ts';

export class BrokerClient {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (h: ArenaHandle) => void; reject: (e: Error) => void }>();

  constructor() {
    parentPort?.on('message', (m: ToWorker) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.type === 'arena-reply') w.resolve(m.handle);
      else w.reject(new Error(m.error));
    });
    // The listener alone must not keep a finished worker alive.
    parentPort?.unref();
  }

  post(m: ToLauncher): void {
    parentPort?.postMessage(m);
  }

  arena(
    key: string,
    size: number,
    slotBytes: number,
    worldRanks: number[],
    group: string,
    timeoutMs: number,
  ): Promise<ArenaHandle> {
    if (!parentPort) return Promise.reject(new Error('not running in a threads-transport worker'));
    const id = this.nextId++;
    parentPort.ref();
    return new Promise<ArenaHandle>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(
          new CollectiveError(
            'timeout',
            `split into ${group}: the launcher did not hand out the group's arena within ${timeoutMs} ms`,
            { group },
          ),
        );
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        if (this.waiting.size === 0) parentPort?.unref();
      };
      this.waiting.set(id, {
        resolve: (h) => {
          done();
          resolve(h);
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
      this.post({ type: 'arena-request', id, key, size, slotBytes, worldRanks });
    });
  }
}
