import { describe, expect, it } from 'vitest';
import { Allocator } from '../../src/tensor/allocator.ts';

describe('Allocator', () => {
  it('tracks live and peak bytes per category and ignores double frees', () => {
    const a = new Allocator();
    const x = a.f32('activations', 100);
    const y = a.f32('params', 10);
    expect(a.stats().live.activations).toBe(400);
    a.free(x);
    a.free(x);
    const s = a.stats();
    expect(s.live.activations).toBe(0);
    expect(s.peak.activations).toBe(400);
    expect(s.liveTotal).toBe(40);
    expect(s.peakTotal).toBe(440);
    a.resetPeak();
    expect(a.stats().peakTotal).toBe(40);
    a.free(y);
    expect(a.stats().liveTotal).toBe(0);
  });
});
