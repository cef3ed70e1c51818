// `train --fault <spec>`: the inproc transport's fault injection from the command line, so a user can watch a
// protocol fail — a rank dying mid-dispatch, arriving late, calling the wrong collective — and read the report,
// the flight dumps and the timeline without writing a test.
//
//   kill:rank=2,group=ep,seq=1            rank 2 dies when it issues collective #1 on group ep
//   delay:rank=1,ms=500[,group=fsdp][,seq=3]   rank 1 arrives 500 ms late (at every collective, or only there)
//   mismatch-op:rank=1,group=fsdp,seq=2   rank 1 calls another collective than its peers
//   mismatch-size:rank=3,group=ep,seq=1,delta=4   rank 3 contributes 4 more elements
// `group` defaults to "world". Groups are the mesh's (world, fsdp, efsdp, ep, dp_replicate, batch, …, and the
// *_reduce groups of the gradient reductions); `moe-actors inspect` and the timeline name them.

import type { Fault } from '../comm/launch.ts';
import { CliError } from './common.ts';

const KINDS = ['kill', 'delay', 'mismatch-op', 'mismatch-size'] as const;
const KEYS: Record<(typeof KINDS)[number], { need: string[]; may: string[] }> = {
  kill: { need: ['rank', 'seq'], may: ['group'] },
  delay: { need: ['rank', 'ms'], may: ['group', 'seq'] },
  'mismatch-op': { need: ['rank', 'seq'], may: ['group'] },
  'mismatch-size': { need: ['rank', 'seq', 'delta'], may: ['group'] },
};
const EXAMPLE = 'e.g. --fault kill:rank=2,group=ep,seq=1 or --fault delay:rank=1,ms=500';

export function parseFault(spec: string): Fault {
  const bad = (why: string): never => {
    throw new CliError(`--fault ${spec}: ${why} (${EXAMPLE})`);
  };
  const colon = spec.indexOf(':');
  const kind = (colon < 0 ? spec : spec.slice(0, colon)) as (typeof KINDS)[number];
  if (!KINDS.includes(kind)) bad(`unknown kind "${kind}"; use one of ${KINDS.join(', ')}`);
  const fields: Record<string, string> = {};
  for (const part of colon < 0 ? [] : spec.slice(colon + 1).split(',')) {
    const eq = part.indexOf('=');
    if (eq <= 0) bad(`"${part}" is not key=value`);
    const k = part.slice(0, eq);
    if (k in fields) bad(`${k} is given twice`);
    fields[k] = part.slice(eq + 1);
  }
  const { need, may } = KEYS[kind];
  for (const k of Object.keys(fields))
    if (!need.includes(k) && !may.includes(k)) bad(`${kind} takes ${[...need, ...may].join(', ')}, not ${k}`);
  for (const k of need) if (!(k in fields)) bad(`${kind} needs ${k}`);
  const int = (k: string, min: number): number | undefined => {
    if (!(k in fields)) return undefined;
    const v = Number(fields[k]);
    if (!(Number.isInteger(v) && v >= min) || fields[k]!.trim() === '')
      bad(`${k} = ${fields[k]} must be an integer ≥ ${min}`);
    return v;
  };
  const group = fields.group;
  if (group === '') bad('group is empty');
  const rank = int('rank', 0)!;
  const seq = int('seq', 1);
  switch (kind) {
    case 'kill':
    case 'mismatch-op':
      return { kind, rank, atSeq: seq!, group };
    case 'mismatch-size': {
      const delta = Number(fields.delta);
      if (!Number.isInteger(delta) || delta === 0) bad(`delta = ${fields.delta} must be a non-zero integer`);
      return { kind, rank, atSeq: seq!, delta, group };
    }
    case 'delay': {
      const ms = Number(fields.ms);
      if (!(Number.isFinite(ms) && ms >= 0) || fields.ms!.trim() === '') bad(`ms = ${fields.ms} must be a number ≥ 0`);
      return { kind, rank, ms, group, atSeq: seq };
    }
  }
}
