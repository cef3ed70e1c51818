// `moe-actors machines`: the protocol machines of src/protocols/*.machine.ts as Mermaid or Graphviz, drawn from the
// machine definitions themselves (src/trace/statechart.ts), so a diagram can never drift from the code. The same
// text makes docs/statecharts.md (scripts/gen-statecharts.ts; a test checks the committed file against it).

import type { AnyStateMachine } from 'xstate';
import { actorSystemMermaid } from '../protocols/actor-system.ts';
import { expertMachine } from '../protocols/expert.machine.ts';
import { fsdpUnitMachine } from '../protocols/fsdp-unit.machine.ts';
import { moeLayerMachine } from '../protocols/moe-layer.machine.ts';
import { optimizerMachine } from '../protocols/optimizer.machine.ts';
import { routerMachine } from '../protocols/router.machine.ts';
import { trainStepMachine } from '../protocols/train-step.machine.ts';
import { toDot, toMermaid } from '../trace/statechart.ts';
import { CliError } from './common.ts';

export interface MachineInfo {
  name: 'moe-layer' | 'fsdp-unit' | 'train-step' | 'expert' | 'router' | 'optimizer';
  machine: AnyStateMachine;
  source: string;
  about: string;
}

export const MACHINES: readonly MachineInfo[] = [
  {
    name: 'moe-layer',
    machine: moeLayerMachine,
    source: 'src/protocols/moe-layer.machine.ts',
    about:
      'One MoE layer, one microbatch, one rank. Forward: route → exchangeCounts → dispatch → compute → combine; backward: ' +
      'the duals in reverse (combineGrad → computeGrad → dispatchGrad → routerGrad). The dispatch strategy (a2a, ' +
      'allgather-padded, allgather-rs, local) is data: the states are the same, only the collectives of the invoked stages differ.',
  },
  {
    name: 'fsdp-unit',
    machine: fsdpUnitMachine,
    source: 'src/protocols/fsdp-unit.machine.ts',
    about:
      'One FSDP parameter unit on one rank: unshard (all_gather of the flat shards) → use → reshard (per the ' +
      'reshard-after-forward policy) → after backward, reduce the gradients (reduce_scatter with SUM, SUM then divide, ' +
      'or PREMUL_SUM; under HSDP an all_reduce across replicas) and reshard.',
  },
  {
    name: 'train-step',
    machine: trainStepMachine,
    source: 'src/protocols/train-step.machine.ts',
    about:
      'One optimizer step on one rank, as torchtitan’s train loop: per microbatch embed → blocks forward → loss → ' +
      'blocks backward (each checkpointed block recomputed first) → embedding backward; then reduceGrads → clip → ' +
      'biasUpdate (MoE models) → optimizer (grad-only mode: done after reduceGrads). It is the root of the step’s ' +
      'actor system: it spawns router, expert, optimizer and fsdp:<unit> under those systemIds.',
  },
  {
    name: 'expert',
    machine: expertMachine,
    source: 'src/protocols/expert.machine.ts',
    about:
      'The expert shard of one rank: spawns one moe-layer machine per MoE layer × microbatch on its first FORWARD, hands ' +
      'it the recompute FORWARD and the BACKWARD, and stops it when its backward is done.',
  },
  {
    name: 'router',
    machine: routerMachine,
    source: 'src/protocols/router.machine.ts',
    about:
      'The router of one rank: ROUTE and ROUTER_GRAD from the moe-layer machines (a layer × microbatch handle), ' +
      'BIAS_UPDATE from the train step (all_reduce of the token counts over the loss group); each answered by an emitted event.',
  },
  {
    name: 'optimizer',
    machine: optimizerMachine,
    source: 'src/protocols/optimizer.machine.ts',
    about:
      'The optimizer of one rank: ZERO_GRAD before the first backward; CLIP (all_reduce of the two-group norm², answered ' +
      'with the norm) → STEP (AdamW with the step’s LR); each answered by an emitted event.',
  },
];

export type DiagramFormat = 'mermaid' | 'dot';

export function machineDiagram(m: MachineInfo, format: DiagramFormat): string {
  return format === 'mermaid' ? toMermaid(m.machine, { title: m.name }) : toDot(m.machine, { title: m.name });
}

/** The machines selected by `--machine` (all when absent), with a clear error for an unknown name or format. */
export function selectMachines(opts: { format: string; machine?: string }): {
  format: DiagramFormat;
  machines: MachineInfo[];
} {
  if (opts.format !== 'mermaid' && opts.format !== 'dot')
    throw new CliError(`--format ${opts.format}: unknown format; use mermaid or dot`);
  if (opts.machine === undefined) return { format: opts.format, machines: [...MACHINES] };
  const m = MACHINES.find((x) => x.name === opts.machine);
  if (!m)
    throw new CliError(
      `--machine ${opts.machine}: unknown machine; use one of ${MACHINES.map((x) => x.name).join(', ')}`,
    );
  return { format: opts.format, machines: [m] };
}

export async function runMachines(opts: { format: string; machine?: string }): Promise<void> {
  const { format, machines } = selectMachines(opts);
  // Separated by a blank line; each diagram is complete on its own (one mermaid block / one digraph).
  process.stdout.write(machines.map((m) => machineDiagram(m, format)).join('\n'));
}

/** docs/statecharts.md, exactly as scripts/gen-statecharts.ts writes it. */
export function statechartsMarkdown(): string {
  const out: string[] = [
    '# Protocol state machines',
    '',
    '<!-- Generated by scripts/gen-statecharts.ts from src/protocols/*.machine.ts; do not edit by hand.',
    '     Regenerate with `node --import tsx scripts/gen-statecharts.ts`; test/cli/machines.test.ts checks it is current. -->',
    '',
    'The XState machines every rank runs, drawn from their definitions. `moe-actors machines` prints the same',
    'diagrams (`--format dot` for Graphviz, `--machine NAME` for one of them).',
    '',
    '- An edge label is the event and, in brackets, its guard: `done(stage)` / `error(stage)` when an invoked stage',
    '  finished or failed, `always` for an eventless transition.',
    '- Mermaid cannot draw an edge between states inside different composite states; such an edge is drawn between',
    '  the composites, and its label names the inner states: `(a → b)`. The Graphviz output keeps every edge exact.',
    '',
  ];
  out.push(
    '## The actor system of one rank',
    '',
    'Which actor sends which event to whom (dashed: the answer), and the collectives each state issues. Source: ' +
      '`src/protocols/actor-system.ts` (the same diagram is in docs/architecture.md).',
    '',
    '```mermaid',
    actorSystemMermaid().trimEnd(),
    '```',
    '',
  );
  for (const m of MACHINES) {
    out.push(
      `## ${m.name}`,
      '',
      `${m.about} Source: \`${m.source}\`.`,
      '',
      '```mermaid',
      machineDiagram(m, 'mermaid').trimEnd(),
      '```',
      '',
    );
  }
  return out.join('\n');
}
