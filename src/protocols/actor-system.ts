// One rank's actor system as data: the actors (systemId, machine, where the implementation lives), the events
// they send each other and the answers they get, and the collectives each state issues on which group. The
// diagram in docs/architecture.md is drawn from this table (actorSystemMermaid), and a test runs a rank and
// checks the table against what the code really spawns, sends and issues (test/actors/actor-system.test.ts).

import type { CollectiveOp } from '../comm/communicator.ts';
import { MOE_PHASES, STRATEGIES, DISPATCH_STRATEGIES } from './strategies.ts';

export interface ActorSpec {
  /** systemId (`fsdp:<unit>`: one per parameter unit; `moe:<layer>/<mb>`: a child of `expert`, no systemId). */
  id: string;
  machine: string;
  /** The folder of its implementation (beside the machine's `.provide`). */
  impl: string;
  about: string;
}

export interface MessageSpec {
  from: string;
  to: string;
  events: readonly string[];
  /**
   * What the sender gets back: an answer sent to the `replyTo` of the request (a machine, or a promise stage's
   * one-shot reply inbox), or nothing.
   */
  answer: string;
  /** Who answers when it is not the receiver (a child of it answers the asker directly). */
  answerFrom?: string;
}

/** The prefix of an answer sent to a promise stage's one-shot reply inbox (not to a machine). */
export const STAGE_REPLY = "to the stage's replyTo:";

export interface CollectiveSpec {
  actor: string;
  /** The machine whose state issues the call, as the call site names it. */
  machine: string;
  state: string;
  op: CollectiveOp;
  /** Mesh group names; one of them, depending on the unit (experts: efsdp) or the layout. */
  groups: readonly string[];
}

export const ACTORS: readonly ActorSpec[] = [
  { id: 'trainStep', machine: 'train-step', impl: 'src/actors/train-step', about: 'root: one per step' },
  { id: 'fsdp:<unit>', machine: 'fsdp-unit', impl: 'src/actors/fsdp', about: 'one per parameter unit' },
  { id: 'expert', machine: 'expert', impl: 'src/actors/expert', about: 'local experts, EP dispatch' },
  {
    id: 'moe:<layer>/<mb>',
    machine: 'moe-layer',
    impl: 'src/actors/expert',
    about: 'child of expert per MoE layer × microbatch',
  },
  { id: 'router', machine: 'router', impl: 'src/actors/router', about: 'routing, expert-bias update' },
  { id: 'optimizer', machine: 'optimizer', impl: 'src/actors/optimizer', about: 'zero grad, clip, AdamW' },
];

export const MESSAGES: readonly MessageSpec[] = [
  {
    from: 'trainStep',
    to: 'optimizer',
    events: ['ZERO_GRAD', 'CLIP', 'STEP'],
    answer: 'to replyTo: GRADS_ZEROED / CLIPPED; done after STEP',
  },
  {
    from: 'trainStep',
    to: 'fsdp:<unit>',
    events: ['UNSHARD', 'FORWARD_DONE', 'GRADS_READY'],
    answer: `${STAGE_REPLY} UNSHARDED / REDUCED / FSDP_FAILED`,
  },
  {
    from: 'trainStep',
    to: 'expert',
    events: ['FORWARD', 'DROP', 'BACKWARD', 'ABORT'],
    answer: `${STAGE_REPLY} FORWARD_DONE / BACKWARD_DONE / MOE_FAILED`,
    answerFrom: 'moe:<layer>/<mb>',
  },
  {
    from: 'expert',
    to: 'moe:<layer>/<mb>',
    events: ['FORWARD', 'DROP', 'BACKWARD', 'ABORT'],
    answer: '(spawns it; it answers the asker itself)',
  },
  {
    from: 'moe:<layer>/<mb>',
    to: 'router',
    events: ['ROUTE', 'ROUTER_GRAD'],
    answer: 'to replyTo: ROUTED / ROUTER_GRAD_DONE; queued in arrival order',
  },
  { from: 'trainStep', to: 'router', events: ['BIAS_UPDATE'], answer: 'to replyTo: BIAS_UPDATED' },
];

/** Collectives outside the moe-layer machine (whose per-strategy collectives are protocols/strategies.ts). */
export const COLLECTIVES: readonly CollectiveSpec[] = [
  { actor: 'trainStep', machine: 'rankHost', state: 'start', op: 'all_reduce', groups: ['batch'] },
  { actor: 'trainStep', machine: 'rankHost', state: 'report', op: 'all_reduce', groups: ['loss'] },
  { actor: 'fsdp:<unit>', machine: 'fsdpUnit', state: 'unsharding', op: 'all_gather', groups: ['fsdp', 'efsdp'] },
  {
    actor: 'fsdp:<unit>',
    machine: 'fsdpUnit',
    state: 'reduceScatter',
    op: 'reduce_scatter',
    groups: ['fsdp_reduce', 'efsdp_reduce'],
  },
  {
    actor: 'fsdp:<unit>',
    machine: 'fsdpUnit',
    state: 'allReduceReplicas',
    op: 'all_reduce',
    groups: ['dp_replicate_reduce'],
  },
  { actor: 'optimizer', machine: 'optimizer', state: 'clipping', op: 'all_reduce', groups: ['fsdp'] },
  { actor: 'router', machine: 'router', state: 'biasUpdate', op: 'all_reduce', groups: ['loss'] },
];

/** The moe-layer states' collectives on the EP group, per dispatch strategy ("a2a: all_to_all_v"). */
export function moeCollectives(): { state: string; ops: string }[] {
  return MOE_PHASES.map((p) => ({
    state: p,
    ops: DISPATCH_STRATEGIES.map((s) => `${s}: ${STRATEGIES[s].phases[p].map((c) => c.op).join(' + ')}`).join('; '),
  }));
}

const nodeId = (id: string) => id.replace(/[^A-Za-z0-9]/g, '_');

/** The Mermaid flowchart of docs/architecture.md's "One rank's actor system". */
export function actorSystemMermaid(): string {
  const lines = ['flowchart LR'];
  for (const a of ACTORS) {
    const coll = COLLECTIVES.filter((c) => c.actor === a.id).map(
      (c) => `${c.state}: ${c.op} @ ${c.groups.join(' | ')}`,
    );
    if (a.id.startsWith('moe:')) coll.push(...moeCollectives().map((m) => `${m.state}: ${m.ops} @ ep`));
    const label = [
      `<b>${a.id.replace(/</g, '#lt;').replace(/>/g, '#gt;')}</b>`,
      `${a.machine} machine · ${a.impl}`,
      a.about,
      ...coll,
    ].join('<br/>');
    lines.push(`  ${nodeId(a.id)}["${label}"]`);
  }
  for (const m of MESSAGES) {
    lines.push(`  ${nodeId(m.from)} -- "${m.events.join(' / ')}" --> ${nodeId(m.to)}`);
    if (!m.answer.startsWith('('))
      lines.push(`  ${nodeId(m.answerFrom ?? m.to)} -. "${m.answer}" .-> ${nodeId(m.from)}`);
  }
  return lines.join('\n') + '\n';
}
