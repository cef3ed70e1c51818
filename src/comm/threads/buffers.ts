// Registration of SharedArrayBuffers between the ranks of one threads world, so that a rank can read a peer's
// send buffer in place instead of having it staged through the peer's arena slot (one copy less per element).
//
// A SharedArrayBuffer reaches another thread only by postMessage. The first time a rank passes a buffer on a
// SharedArrayBuffer to a collective, it gives the buffer an id and posts (owner, id, buffer) once on the world's
// BroadcastChannel; its call descriptor then names (id, element offset) instead of carrying data. A peer that
// reads the descriptor before the registration message has been delivered waits for it (the sender posts it
// before it publishes its arrival). A BroadcastChannel delivers only to channels open when the message was
// posted, so a rank that started late asks for a registration it missed ('want'), and the owner — waiting in the
// same collective for its readers, with its event loop turning — posts it again. Ids are never reused.
//
// Memory stays bounded by what the owner keeps alive: peers hold their handle on a registered buffer only until
// the owner's own handle is garbage-collected (a FinalizationRegistry posts a 'drop'); the owner's handle cannot
// be collected while a collective uses it, and a collective that lent its send buffer returns only after every
// peer has finished reading it.

import { BroadcastChannel } from 'node:worker_threads';

type Message =
  | { type: 'register'; owner: number; id: number; sab: SharedArrayBuffer }
  | { type: 'drop'; owner: number; id: number }
  | { type: 'want'; owner: number; id: number };

export class PeerBuffers {
  private readonly channel: BroadcastChannel;
  private readonly mine = new WeakMap<SharedArrayBuffer, number>();
  /** id → my registered buffer, for posting it again on request (weak: registration must not keep it alive). */
  private readonly byId = new Map<number, WeakRef<SharedArrayBuffer>>();
  private next = 1;
  /** `${owner}:${id}` → a peer's registered buffer. */
  private readonly peers = new Map<string, SharedArrayBuffer>();
  private readonly waiters = new Set<() => void>();
  private readonly finalizer: FinalizationRegistry<number>;
  private closed = false;

  constructor(
    readonly worldRank: number,
    readonly channelName: string,
  ) {
    this.channel = new BroadcastChannel(channelName);
    this.channel.onmessage = (ev: unknown) => this.receive((ev as { data: Message }).data);
    // The channel alone must not keep a finished worker alive.
    (this.channel as unknown as { unref(): void }).unref();
    this.finalizer = new FinalizationRegistry((id: number) => {
      this.byId.delete(id);
      if (!this.closed) this.channel.postMessage({ type: 'drop', owner: this.worldRank, id } satisfies Message);
    });
  }

  /** The id peers know `sab` by; registers it with every rank of the world on first use. */
  idOf(sab: SharedArrayBuffer): number {
    let id = this.mine.get(sab);
    if (id === undefined) {
      id = this.next++;
      this.mine.set(sab, id);
      this.byId.set(id, new WeakRef(sab));
      this.channel.postMessage({ type: 'register', owner: this.worldRank, id, sab } satisfies Message);
      this.finalizer.register(sab, id);
    }
    return id;
  }

  /** Rank `owner`'s buffer `id`, or undefined while its registration is still on its way. */
  get(owner: number, id: number): SharedArrayBuffer | undefined {
    return this.peers.get(`${owner}:${id}`);
  }

  /** Asks `owner` to post its registration `id` again (this thread missed it). */
  want(owner: number, id: number): void {
    if (!this.closed) this.channel.postMessage({ type: 'want', owner, id } satisfies Message);
  }

  /** Resolves at the next registration delivered to this thread, or after `ms`. */
  changed(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.waiters.add(done);
    });
  }

  /** Number of peers' buffers this thread holds (tests, status). */
  get held(): number {
    return this.peers.size;
  }

  close(): void {
    this.closed = true;
    this.channel.close();
  }

  private receive(m: Message): void {
    if (m.type === 'want') {
      const sab = m.owner === this.worldRank ? this.byId.get(m.id)?.deref() : undefined;
      if (sab && !this.closed)
        this.channel.postMessage({ type: 'register', owner: this.worldRank, id: m.id, sab } satisfies Message);
      return;
    }
    if (m.owner === this.worldRank) return;
    if (m.type === 'register') {
      this.peers.set(`${m.owner}:${m.id}`, m.sab);
      for (const w of [...this.waiters]) w();
    } else {
      this.peers.delete(`${m.owner}:${m.id}`);
    }
  }
}
