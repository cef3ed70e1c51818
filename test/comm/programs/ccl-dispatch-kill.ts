// A rank killed in the middle of a real EP dispatch of a training step: the distributed-run program (RankHost, the
// moe-layer machines, the a2a strategy) on a world whose "ep" group, on the victim, issues its `atCall`-th
// all_to_all_v and then SIGKILLs the process with that collective in flight. The communicator is wrapped, the
// runtime is not touched.
import type { Communicator } from '../../../src/comm/communicator.ts';
import type { RankContext } from '../../../src/comm/launch.ts';
import { rankMain as distributedRun, type DistributedRunArgs } from '../../../src/actors/programs/distributed-run.ts';
import type { ParityCaseJson } from '../../runtime/programs/parity-driver.ts';

export interface DispatchKillArgs {
  run: ParityCaseJson;
  victim: number;
  atCall: number;
}

function forward(t: Communicator, over: Partial<Record<keyof Communicator, unknown>>): Communicator {
  return new Proxy(t, {
    get(target, prop, recv) {
      if (prop in over) return over[prop as keyof Communicator];
      const v = Reflect.get(target, prop, recv);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

export async function rankMain(ctx: RankContext<DispatchKillArgs>): Promise<unknown> {
  const { run, victim, atCall } = ctx.args;
  let calls = 0;
  const killer = (ep: Communicator) =>
    forward(ep, {
      allToAllV: (...a: Parameters<Communicator['allToAllV']>) => {
        const p = ep.allToAllV(...a);
        if (++calls === atCall) process.kill(process.pid, 'SIGKILL');
        return p;
      },
    });
  const world =
    ctx.rank === victim
      ? forward(ctx.world, {
          split: async (color: number, key: number, name: string) => {
            const c = await ctx.world.split(color, key, name);
            return name === 'ep' ? killer(c) : c;
          },
        })
      : ctx.world;
  const args: DistributedRunArgs = {
    ...run,
    tokens: Int32Array.from(run.tokens),
    labels: Int32Array.from(run.labels),
    mode: 'train',
  };
  const r = await distributedRun({ ...ctx, world, args });
  return { losses: r.losses };
}
