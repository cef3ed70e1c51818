// One rank's handle on one inproc group. All the work happens in the world (arrival, faults, diagnosis) and the
// group (matching, data movement); this class only routes BaseCommunicator's hooks there.

import { BaseCommunicator, type CallSpec } from '../base-communicator.ts';
import { FULL, type Capabilities } from '../capabilities.ts';
import type { Communicator } from '../communicator.ts';
import type { InprocGroup } from './group.ts';
import type { InprocWorld } from './world.ts';

/** inproc implements every collective; profiles narrow it to a real backend's limits. */
export const INPROC_CAPS: Capabilities = FULL;

export class InprocCommunicator extends BaseCommunicator {
  private splits = 0;

  constructor(
    readonly world: InprocWorld,
    readonly group: InprocGroup,
    groupRank: number,
  ) {
    super({
      rank: groupRank,
      size: group.size,
      ranks: group.ranks,
      name: group.name,
      transport: 'inproc',
      profile: world.profile,
      transportCaps: INPROC_CAPS,
      recorder: world.recorders[group.ranks[groupRank]!]!,
      timeoutMs: world.timeoutMs,
      multiNode: group.multiNode,
      observer: world.observer,
    });
  }

  get worldRank(): number {
    return this.ranks[this.rank]!;
  }

  protected override execute(call: CallSpec): Promise<void> {
    return this.world.submit(this, call);
  }

  protected override splitImpl(color: number, key: number, name: string): Promise<Communicator> {
    return this.world.submitSplit(this, this.splits++, color, key, name);
  }

  protected override async freeImpl(): Promise<void> {
    this.world.leaveGroup(this, `freed group ${this.name}`);
  }

  protected override diagnose(call: CallSpec): string {
    return this.world.diagnoseCall(this.group, call);
  }

  protected override onTimeout(call: CallSpec): void {
    this.world.onTimeout(this, call);
  }
}
