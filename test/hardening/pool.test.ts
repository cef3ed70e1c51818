// The activation pool is a cache: its idle buffers must stay bounded when the sizes asked for keep changing (MoE
// dispatch buffers follow the routing), which the 300-step soak showed as ArrayBuffers growing past step 100.
import { describe, expect, it } from 'vitest';
import { ActivationPool, IDLE_BOUND } from '../../src/models/pool.ts';
import { Allocator } from '../../src/tensor/allocator.ts';

describe('ActivationPool idle bound', () => {
  it('holds at most IDLE_BOUND × its peak live set idle, however many size classes it has seen', () => {
    const pool = new ActivationPool(new Allocator());
    // A "step" needs 3 buffers at once: two fixed sizes and one that varies with the routing.
    let peakLive = 0;
    for (let step = 0; step < 400; step++) {
      const a = pool.get(4096);
      const b = pool.get(1000);
      const c = pool.get(2000 + 37 * step); // a new size class every few steps
      peakLive = Math.max(peakLive, (4096 + 1024 + Math.ceil((2000 + 37 * step) / 256) * 256) * 4 * 2);
      pool.release(c);
      pool.release(b);
      pool.release(a);
      expect(pool.liveCount).toBe(0);
    }
    expect(pool.reservedBytes).toBeLessThanOrEqual(IDLE_BOUND * peakLive);
    expect(pool.reservedBytes).toBeGreaterThan(0);
  });

  it('still reuses the buffers of a steady working set (no eviction churn)', () => {
    const pool = new ActivationPool(new Allocator());
    const first = [pool.get(4096), pool.get(1000)];
    const bases = first.map((x) => x.buffer);
    for (const x of first) pool.release(x);
    for (let i = 0; i < 10; i++) {
      const a = pool.get(4096);
      const b = pool.get(1000);
      expect(new Set([a.buffer, b.buffer])).toEqual(new Set(bases));
      pool.release(a);
      pool.release(b);
    }
  });

  it('keeps a step whose buffers are never all live at once (more bytes than the peak live set)', () => {
    // The model's head: logits (large) live from the end of forward into the start of backward, released before
    // the backward's own buffers, which together are as large. A bound of 1× peak live evicted the logits every
    // step, and the output projection then wrote into fresh pages.
    const pool = new ActivationPool(new Allocator());
    const step = () => {
      const logits = pool.get(1 << 20);
      const lse = pool.get(1 << 10);
      pool.release(lse);
      pool.release(logits);
      const dx = pool.get(1 << 19);
      const dh = pool.get(1 << 19);
      const tmp = pool.get(3 << 17);
      const out = [logits, dx, dh, tmp].map((x) => x.buffer);
      pool.release(tmp);
      pool.release(dh);
      pool.release(dx);
      return out;
    };
    const first = step();
    for (let i = 0; i < 5; i++) {
      const again = step();
      for (let j = 0; j < first.length; j++) expect(again[j], `buffer ${j}, step ${i + 1}`).toBe(first[j]);
    }
  });
});
