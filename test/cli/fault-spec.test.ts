// `train --fault <spec>`: parsing into the inproc transport's Fault objects, and the errors for bad specs.
import { describe, expect, it } from 'vitest';
import { parseFault } from '../../src/cli/fault-spec.ts';

describe('--fault specs', () => {
  it('parses every kind, with group defaulting to world (left undefined) and seq optional for delay', () => {
    expect(parseFault('kill:rank=2,group=ep,seq=1')).toEqual({ kind: 'kill', rank: 2, atSeq: 1, group: 'ep' });
    expect(parseFault('kill:seq=3,rank=0')).toEqual({ kind: 'kill', rank: 0, atSeq: 3, group: undefined });
    expect(parseFault('delay:rank=1,ms=500')).toEqual({
      kind: 'delay',
      rank: 1,
      ms: 500,
      group: undefined,
      atSeq: undefined,
    });
    expect(parseFault('delay:rank=1,ms=2.5,group=fsdp,seq=4')).toEqual({
      kind: 'delay',
      rank: 1,
      ms: 2.5,
      group: 'fsdp',
      atSeq: 4,
    });
    expect(parseFault('mismatch-op:rank=1,group=fsdp,seq=2')).toEqual({
      kind: 'mismatch-op',
      rank: 1,
      atSeq: 2,
      group: 'fsdp',
    });
    expect(parseFault('mismatch-size:rank=3,group=ep,seq=1,delta=-4')).toEqual({
      kind: 'mismatch-size',
      rank: 3,
      atSeq: 1,
      delta: -4,
      group: 'ep',
    });
  });

  const bad: [string, RegExp][] = [
    ['boom:rank=1', /unknown kind "boom"; use one of kill, delay, mismatch-op, mismatch-size/],
    ['kill:rank=2', /kill needs seq/],
    ['kill', /kill needs rank/],
    ['kill:rank=2,seq=1,ms=3', /kill takes rank, seq, group, not ms/],
    ['kill:rank=2,seq=0', /seq = 0 must be an integer ≥ 1/],
    ['kill:rank=-1,seq=1', /rank = -1 must be an integer ≥ 0/],
    ['kill:rank=x,seq=1', /rank = x must be an integer ≥ 0/],
    ['kill:rank=1,rank=2,seq=1', /rank is given twice/],
    ['kill:rank=1;seq=1', /kill needs seq/],
    ['kill:rank2,seq=1', /"rank2" is not key=value/],
    ['delay:rank=1,ms=-5', /ms = -5 must be a number ≥ 0/],
    ['delay:rank=1,ms=', /ms =  must be a number ≥ 0/],
    ['mismatch-size:rank=1,seq=1,delta=0', /delta = 0 must be a non-zero integer/],
    ['kill:rank=1,seq=1,group=', /group is empty/],
  ];
  for (const [spec, re] of bad) {
    it(`refuses ${spec}`, () => {
      expect(() => parseFault(spec)).toThrow(re);
      expect(() => parseFault(spec)).toThrow(
        /\(e\.g\. --fault kill:rank=2,group=ep,seq=1 or --fault delay:rank=1,ms=500\)$/,
      );
    });
  }
});
