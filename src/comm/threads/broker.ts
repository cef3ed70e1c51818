// Launcher side: creates and shares group arenas. `split` runs inside the workers, but a SharedArrayBuffer can
// only reach another thread by postMessage, so every member asks the launcher for the arena of its new group under
// a key all members compute alike (parent arena, split sequence number, color); the first request creates it.
// The broker also knows every arena's members, so when a worker dies it can poison exactly the groups that can
// no longer complete, waking their waiters at once.

import { Arena, createArena, type ArenaHandle, type PoisonKind } from './arena.ts';

interface Entry {
  arena: Arena;
  worldRanks: readonly number[];
  /** Members still holding the arena (release on free). */
  holders: number;
}

export class ArenaBroker {
  private readonly byKey = new Map<string, Entry>();
  private readonly byId = new Map<string, Entry>();
  private nextId = 0;

  create(key: string, size: number, slotBytes: number, worldRanks: readonly number[]): ArenaHandle {
    let e = this.byKey.get(key);
    if (!e) {
      const handle = createArena(`g${this.nextId++}`, size, slotBytes);
      e = { arena: new Arena(handle), worldRanks, holders: size };
      this.byKey.set(key, e);
      this.byId.set(handle.id, e);
    } else if (e.arena.size !== size || e.worldRanks.join(',') !== worldRanks.join(',')) {
      throw new Error(
        `split key ${key}: members disagree on the new group (${e.worldRanks.join(',')} vs ${worldRanks.join(',')})`,
      );
    }
    return { id: e.arena.id, sab: e.arena.sab };
  }

  release(id: string): void {
    const e = this.byId.get(id);
    if (!e || --e.holders > 0) return;
    this.byId.delete(id);
    for (const [k, v] of this.byKey) if (v === e) this.byKey.delete(k);
  }

  /** A member is gone for good: every group it belongs to is unusable. */
  poisonGroupsOf(worldRank: number, kind: PoisonKind): void {
    for (const e of this.byId.values()) if (e.worldRanks.includes(worldRank)) e.arena.poison(worldRank, kind);
  }

  /** What a dead rank last did in each of its groups, read from shared memory (it cannot answer any more). */
  lastCalls(worldRank: number): string[] {
    const out: string[] = [];
    for (const [key, e] of this.byKey) {
      const q = e.worldRanks.indexOf(worldRank);
      if (q < 0) continue;
      const d = e.arena.lastDescriptor(q);
      if (d.op === 'none') continue;
      const arrived = e.arena.arrive(q);
      const done = e.arena.done(q);
      const where = done >= arrived ? 'completed' : 'entered but did not complete';
      out.push(`${where} ${d.op} #${d.seq} on group ${groupLabel(key)}`);
    }
    return out;
  }
}

function groupLabel(key: string): string {
  return key.startsWith('name:') ? key.slice(5).split('/')[0]! : key;
}
