// Byte accounting across a rank's communicators. Each communicator counts its own logical payload (BaseCommunicator:
// bytes this rank contributes and receives, not what a ring or tree algorithm puts on the wire); metrics want them
// per group name ("ep", "fsdp", …), summed over every communicator of that name the rank holds.

import type { ByteCounters, Communicator } from './communicator.ts';

export function sumBytesByGroup(comms: Iterable<Pick<Communicator, 'name' | 'bytes'>>): Record<string, ByteCounters> {
  const out: Record<string, ByteCounters> = {};
  const seen = new Set<ByteCounters>();
  for (const c of comms) {
    // The same communicator listed twice must not count twice.
    if (seen.has(c.bytes)) continue;
    seen.add(c.bytes);
    const t = (out[c.name] ??= { sent: 0, received: 0, calls: 0 });
    t.sent += c.bytes.sent;
    t.received += c.bytes.received;
    t.calls += c.bytes.calls;
  }
  return out;
}

/** Total over all groups. */
export function totalBytes(byGroup: Readonly<Record<string, ByteCounters>>): ByteCounters {
  const t: ByteCounters = { sent: 0, received: 0, calls: 0 };
  for (const c of Object.values(byGroup)) {
    t.sent += c.sent;
    t.received += c.received;
    t.calls += c.calls;
  }
  return t;
}
