// The conformance program over a real transport's communicator with a planted bug (test/comm/ccl.test.ts): it
// must fail there too, naming the op and the group, so a pass on that transport means something. The bug is
// conformance-mutants.test.ts's all_to_all_v that delivers the chunks of sources 0 and 1 swapped — applied after
// the real collective, so the transport itself is exercised as usual.
import type { CommArray, Communicator } from '../../../src/comm/communicator.ts';
import type { RankContext } from '../../../src/comm/launch.ts';
import { rankMain as conformance, type ConformanceArgs, type ConformanceSummary } from './conformance.ts';

function swapFirstTwoSources(c: Communicator): Communicator {
  return new Proxy(c, {
    get(target, prop, recv) {
      if (prop === 'allToAllV') {
        return async (
          send: CommArray,
          sc: number[],
          r: CommArray,
          rc: number[],
          opts?: Parameters<Communicator['allToAllV']>[4],
        ) => {
          await target.allToAllV(send, sc, r, rc, opts);
          if (rc[0]! > 0 && rc[1]! > 0) {
            const a = r.slice(0, rc[0]);
            r.copyWithin(0, rc[0]!, rc[0]! + rc[1]!);
            r.set(a as never, rc[1]);
          }
        };
      }
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

export function rankMain(ctx: RankContext<ConformanceArgs>): Promise<ConformanceSummary> {
  return conformance({ ...ctx, world: swapFirstTwoSources(ctx.world) });
}
