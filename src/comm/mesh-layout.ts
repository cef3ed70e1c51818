// torchtitan's ParallelDims (semantics §4.1) as pure arithmetic: degrees → validated layout → which world ranks
// form each named group. No communicators here, so a planner, `moe-actors plan` or a test can ask "who is in my ep
// group" without any ranks running; DeviceMesh (mesh.ts) turns the layout into communicators.
//
// The world is unflattened row-major (the last dim varies fastest) three ways:
//   dataloading  [pp, batch, cp, tp]          batch = dp_replicate·dp_shard
//   dense        [pp, dp_replicate, fsdp, tp] fsdp  = dp_shard·cp
//   sparse       [pp, dp_replicate, efsdp, ep, etp]  efsdp = dp_shard·cp·tp / (etp·ep)
// and `loss` is the flattened (batch, cp) of the dataloading view.

export interface ParallelDegrees {
  dp_replicate: number;
  /** −1: infer as world / (dp_replicate·cp·tp·pp). */
  dp_shard: number;
  cp: number;
  tp: number;
  pp: number;
  ep: number;
  etp: number;
}

export const DEFAULT_DEGREES: ParallelDegrees = { dp_replicate: 1, dp_shard: -1, cp: 1, tp: 1, pp: 1, ep: 1, etp: 1 };

export type MeshView = 'dataloading' | 'dense' | 'sparse';
export type MeshDim = 'pp' | 'dp_replicate' | 'fsdp' | 'tp' | 'batch' | 'cp' | 'loss' | 'efsdp' | 'ep' | 'etp';

/** Every named group, in the order DeviceMesh creates them (the same on every rank). */
export const MESH_DIMS: readonly MeshDim[] = [
  'pp',
  'dp_replicate',
  'fsdp',
  'tp',
  'batch',
  'cp',
  'loss',
  'efsdp',
  'ep',
  'etp',
];

/** Which view and which of its dims (flattened) each group spans. */
const DIM_SOURCE: Record<MeshDim, { view: MeshView; dims: readonly string[] }> = {
  pp: { view: 'dense', dims: ['pp'] },
  dp_replicate: { view: 'dense', dims: ['dp_replicate'] },
  fsdp: { view: 'dense', dims: ['fsdp'] },
  tp: { view: 'dense', dims: ['tp'] },
  batch: { view: 'dataloading', dims: ['batch'] },
  cp: { view: 'dataloading', dims: ['cp'] },
  loss: { view: 'dataloading', dims: ['batch', 'cp'] },
  efsdp: { view: 'sparse', dims: ['efsdp'] },
  ep: { view: 'sparse', dims: ['ep'] },
  etp: { view: 'sparse', dims: ['etp'] },
};

export interface MeshOptions {
  /** Routed experts E: checks E % ep == 0. */
  numExperts?: number;
  /** Checks seq_len % (tp·2·cp) == 0, as torchtitan's parallelize asserts. */
  seqLen?: number;
  /** Accept tp/pp/cp > 1 (for planning only: moe-actors does not run them). */
  allowUnsupported?: boolean;
}

export interface MeshLayout {
  worldSize: number;
  /** With dp_shard resolved. */
  degrees: ParallelDegrees;
  /** Size of every named group. */
  sizes: Record<MeshDim, number>;
  views: Record<MeshView, readonly { name: string; size: number }[]>;
  /** torchtitan applies FSDP when dp_shard > 1 or cp > 1, or when ep > 1 (the experts' efsdp). */
  fsdpEnabled: boolean;
}

/** An invalid parallelism setting: the field, its value, the rule it breaks, and how to fix it. */
export class MeshError extends Error {
  constructor(
    readonly field: string,
    readonly value: number,
    readonly rule: string,
    readonly fix: string,
  ) {
    super(`invalid parallelism: ${field} = ${value}: ${rule}. Fix: ${fix}`);
    this.name = 'MeshError';
  }
}

const divisors = (n: number) => Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);

/** Validates `degrees` for `worldSize` with torchtitan's rules, then ours (tp/pp/cp not supported yet). */
export function planMesh(partial: Partial<ParallelDegrees>, worldSize: number, opts: MeshOptions = {}): MeshLayout {
  const d: ParallelDegrees = { ...DEFAULT_DEGREES, ...partial };
  if (!Number.isInteger(worldSize) || worldSize < 1)
    throw new MeshError('world_size', worldSize, 'must be an integer ≥ 1', 'launch at least one rank');
  for (const f of ['dp_replicate', 'cp', 'tp', 'pp', 'ep', 'etp'] as const) {
    if (!Number.isInteger(d[f]) || d[f] < 1) {
      throw new MeshError(
        f,
        d[f],
        'every degree must be an integer ≥ 1 (only dp_shard may be −1, meaning "infer")',
        `set ${f} = 1 to leave this dimension unused`,
      );
    }
  }
  if (!Number.isInteger(d.dp_shard) || (d.dp_shard < 1 && d.dp_shard !== -1)) {
    throw new MeshError(
      'dp_shard',
      d.dp_shard,
      'must be −1 (infer) or an integer ≥ 1',
      'set dp_shard = -1 to use every rank not taken by the other dimensions',
    );
  }
  const others = d.dp_replicate * d.cp * d.tp * d.pp;
  if (d.dp_shard === -1) {
    const inferred = Math.floor(worldSize / others);
    if (inferred < 1) {
      throw new MeshError(
        'dp_shard',
        -1,
        `inferred as world_size // (dp_replicate·cp·tp·pp) = ${worldSize} // ${others} = 0, but it must be ≥ 1`,
        `make dp_replicate·cp·tp·pp (= ${others}) at most the world size ${worldSize}`,
      );
    }
    d.dp_shard = inferred;
  }
  const product = others * d.dp_shard;
  if (product !== worldSize) {
    const explicit = partial.dp_shard !== undefined && partial.dp_shard !== -1;
    const fits = worldSize % others === 0;
    throw new MeshError(
      explicit ? 'dp_shard' : 'dp_replicate·cp·tp·pp',
      explicit ? d.dp_shard : others,
      `dp_replicate·dp_shard·cp·tp·pp must equal the world size: ${d.dp_replicate}·${d.dp_shard}·${d.cp}·${d.tp}·${d.pp} = ${product} ≠ ${worldSize} (ep and etp are not factors: EP borrows ranks from dp_shard·cp·tp)`,
      fits
        ? `set dp_shard = ${worldSize / others} (or -1 to infer it)`
        : `dp_replicate·cp·tp·pp = ${others} must divide the world size ${worldSize}; run on a multiple of ${others} ranks or lower those degrees`,
    );
  }
  if (d.ep > 1 && d.etp !== d.tp && d.etp !== 1) {
    throw new MeshError(
      'etp',
      d.etp,
      `with ep > 1, etp must equal tp (${d.tp}) or 1 (torchtitan supports only ETP = TP or ETP = 1)`,
      d.tp === 1 ? `set etp = 1` : `set etp = 1 or etp = ${d.tp}`,
    );
  }
  const epBase = d.dp_shard * d.cp * d.tp;
  if (epBase % d.etp !== 0) {
    throw new MeshError(
      'etp',
      d.etp,
      `etp must divide dp_shard·cp·tp = ${epBase} (the sparse view splits those ranks into efsdp·ep·etp)`,
      `choose etp among ${divisors(epBase).join(', ')}`,
    );
  }
  if (epBase % (d.etp * d.ep) !== 0) {
    const ok = divisors(epBase / d.etp);
    throw new MeshError(
      'ep',
      d.ep,
      `efsdp = dp_shard·cp·tp / (etp·ep) = ${epBase} / ${d.etp * d.ep} must be exact: EP (times etp) takes its ranks from dp_shard·cp·tp`,
      `choose ep among ${ok.join(', ')} (divisors of dp_shard·cp·tp / etp), or raise dp_shard`,
    );
  }
  if (opts.numExperts !== undefined && opts.numExperts % d.ep !== 0) {
    throw new MeshError(
      'ep',
      d.ep,
      `the ${opts.numExperts} routed experts must divide evenly over ep ranks (E % ep == 0)`,
      `choose ep among ${divisors(opts.numExperts).join(', ')}`,
    );
  }
  if (opts.seqLen !== undefined && opts.seqLen % (d.tp * 2 * d.cp) !== 0) {
    throw new MeshError(
      'seq_len',
      opts.seqLen,
      `seq_len must be divisible by tp·2·cp = ${d.tp * 2 * d.cp} (torchtitan asserts it; the factor 2 applies even with cp = 1)`,
      `use a seq_len that is a multiple of ${d.tp * 2 * d.cp}`,
    );
  }
  if (!opts.allowUnsupported) {
    const unsupported: [keyof ParallelDegrees, string][] = [
      ['tp', 'tensor parallelism'],
      ['pp', 'pipeline parallelism'],
      ['cp', 'context parallelism'],
    ];
    for (const [f, what] of unsupported) {
      if (d[f] > 1) {
        throw new MeshError(
          f,
          d[f],
          `${what} is valid for torchtitan but not supported yet by moe-actors (no ${f.toUpperCase()} compute)`,
          `set ${f} = 1 and use dp_shard, dp_replicate and ep instead`,
        );
      }
    }
  }
  const efsdp = epBase / (d.etp * d.ep);
  const batch = d.dp_replicate * d.dp_shard;
  const fsdp = d.dp_shard * d.cp;
  const views: MeshLayout['views'] = {
    dataloading: [
      { name: 'pp', size: d.pp },
      { name: 'batch', size: batch },
      { name: 'cp', size: d.cp },
      { name: 'tp', size: d.tp },
    ],
    dense: [
      { name: 'pp', size: d.pp },
      { name: 'dp_replicate', size: d.dp_replicate },
      { name: 'fsdp', size: fsdp },
      { name: 'tp', size: d.tp },
    ],
    sparse: [
      { name: 'pp', size: d.pp },
      { name: 'dp_replicate', size: d.dp_replicate },
      { name: 'efsdp', size: efsdp },
      { name: 'ep', size: d.ep },
      { name: 'etp', size: d.etp },
    ],
  };
  const sizes = {} as Record<MeshDim, number>;
  for (const dim of MESH_DIMS) {
    const src = DIM_SOURCE[dim];
    sizes[dim] = views[src.view].filter((v) => src.dims.includes(v.name)).reduce((a, v) => a * v.size, 1);
  }
  return { worldSize, degrees: d, sizes, views, fsdpEnabled: d.dp_shard > 1 || d.cp > 1 || d.ep > 1 };
}

/** Coordinates of `rank` in a view, row-major with the last dim fastest. */
export function coordsOf(layout: MeshLayout, view: MeshView, rank: number): Record<string, number> {
  const dims = layout.views[view];
  const out: Record<string, number> = {};
  let rest = rank;
  for (let i = dims.length - 1; i >= 0; i--) {
    out[dims[i]!.name] = rest % dims[i]!.size;
    rest = Math.floor(rest / dims[i]!.size);
  }
  return out;
}

/**
 * The group of `dim` that `rank` belongs to (world ranks, ascending = group order), and its index among the
 * groups of that dim (the split color).
 */
export function groupOf(layout: MeshLayout, dim: MeshDim, rank: number): { ranks: number[]; index: number } {
  const src = DIM_SOURCE[dim];
  const dims = layout.views[src.view];
  const mine = coordsOf(layout, src.view, rank);
  const ranks: number[] = [];
  for (let r = 0; r < layout.worldSize; r++) {
    const c = coordsOf(layout, src.view, r);
    if (dims.every((d) => src.dims.includes(d.name) || c[d.name] === mine[d.name])) ranks.push(r);
  }
  // Index of the group: the rank's coordinates on the other dims, flattened row-major.
  let index = 0;
  for (const d of dims) if (!src.dims.includes(d.name)) index = index * d.size + mine[d.name]!;
  return { ranks, index };
}

/** All groups of `dim`, each as ascending world ranks. */
export function groupsOf(layout: MeshLayout, dim: MeshDim): number[][] {
  const byIndex = new Map<number, number[]>();
  for (let r = 0; r < layout.worldSize; r++) {
    const g = groupOf(layout, dim, r);
    if (!byIndex.has(g.index)) byIndex.set(g.index, g.ranks);
  }
  return [...byIndex.entries()].sort((a, b) => a[0] - b[0]).map(([, rs]) => rs);
}

/** ep rank r owns experts [r·E/ep, (r+1)·E/ep) (torchtitan's Shard(0) on the ep mesh). */
export function expertRange(
  layout: MeshLayout,
  rank: number,
  numExperts: number,
): { start: number; end: number; local: number } {
  const ep = layout.degrees.ep;
  if (numExperts % ep !== 0) {
    throw new MeshError(
      'ep',
      ep,
      `the ${numExperts} routed experts must divide evenly over ep ranks (E % ep == 0)`,
      `choose ep among ${divisors(numExperts).join(', ')}`,
    );
  }
  const epRank = coordsOf(layout, 'sparse', rank).ep!;
  const local = numExperts / ep;
  return { start: epRank * local, end: (epRank + 1) * local, local };
}

/** The rank's data-parallel index and degree: which shard of the global batch it loads (torchtitan's dp_rank). */
export function batchShard(layout: MeshLayout, rank: number): { index: number; degree: number } {
  return { index: coordsOf(layout, 'dataloading', rank).batch!, degree: layout.sizes.batch };
}

/** A table of every group, for `moe-actors plan` and error messages. */
export function describeLayout(layout: MeshLayout): string {
  const d = layout.degrees;
  const lines = [
    `world ${layout.worldSize}: dp_replicate ${d.dp_replicate}, dp_shard ${d.dp_shard}, cp ${d.cp}, tp ${d.tp}, pp ${d.pp}, ep ${d.ep}, etp ${d.etp}; FSDP ${layout.fsdpEnabled ? 'on' : 'off'}`,
  ];
  for (const dim of MESH_DIMS) {
    lines.push(
      `  ${dim.padEnd(12)} size ${String(layout.sizes[dim]).padEnd(3)} groups ${groupsOf(layout, dim)
        .map((g) => `{${g.join(',')}}`)
        .join(' ')}`,
    );
  }
  return lines.join('\n');
}
