// What a backend can really do, and the profiles that narrow any transport to a real backend's limits so that
// Aurora's constraints (no all_to_all, no PREMUL_SUM) are testable on a laptop. The planner reads these before a
// run; the communicator enforces them on every call, so a missing collective is an immediate error, never a hang.

import type { CollectiveOp, ReduceOp } from './communicator.ts';

export interface Capabilities {
  allGather: boolean;
  /** Uneven per-rank counts in one all_gather (MPI_Allgatherv). */
  allGatherV: boolean;
  reduceScatter: boolean;
  allReduce: boolean;
  /** 'equal-count': only when every send and receive count is the same (oneCCL v2's onecclAllToAll). */
  allToAllV: 'yes' | 'equal-count' | 'no';
  /** 'single-node': only on groups whose ranks share one node (oneCCL's Xe-Link-only path). */
  premulSum: 'yes' | 'single-node' | 'no';
  /** ReduceOp.AVG in reduce_scatter / all_reduce. */
  avg: boolean;
  broadcast: boolean;
  barrier: boolean;
  split: boolean;
}

export const FULL: Capabilities = {
  allGather: true,
  allGatherV: true,
  reduceScatter: true,
  allReduce: true,
  allToAllV: 'yes',
  premulSum: 'yes',
  avg: true,
  broadcast: true,
  barrier: true,
  split: true,
};

export interface Profile {
  name: ProfileName;
  description: string;
  caps: Capabilities;
}

export const PROFILE_NAMES = ['full', 'xccl-2025', 'xccl-2026', 'oneccl-v2'] as const;
export type ProfileName = (typeof PROFILE_NAMES)[number];

export const PROFILES: Record<ProfileName, Profile> = {
  full: { name: 'full', description: 'every collective the transport implements', caps: FULL },
  'xccl-2025': {
    name: 'xccl-2025',
    description:
      "PyTorch XCCL as on the Aurora report's stack (2025): no all_to_all, no PREMUL_SUM, equal-size all_gather only",
    caps: { ...FULL, allToAllV: 'no', premulSum: 'no', allGatherV: false },
  },
  'xccl-2026': {
    name: 'xccl-2026',
    description: 'PyTorch XCCL 2026: all_to_all(v) works; PREMUL_SUM only within one node (Xe Link)',
    caps: { ...FULL, premulSum: 'single-node' },
  },
  'oneccl-v2': {
    name: 'oneccl-v2',
    description: 'oneCCL v2 C API: onecclAllToAll is equal-count only, no all_gather_v',
    caps: { ...FULL, allToAllV: 'equal-count', allGatherV: false },
  },
};

export function profileByName(name: string): Profile {
  const p = (PROFILES as Record<string, Profile>)[name];
  if (!p) {
    throw new Error(`unknown communication profile "${name}"; known profiles: ${PROFILE_NAMES.join(', ')}`);
  }
  return p;
}

/** The capabilities of `transport` seen through `profile`: an op is available only if both have it. */
export function narrow(transport: Capabilities, profile: Capabilities): Capabilities {
  const rank3 = <T extends string>(order: readonly T[], a: T, b: T): T => (order.indexOf(a) < order.indexOf(b) ? a : b);
  return {
    allGather: transport.allGather && profile.allGather,
    allGatherV: transport.allGatherV && profile.allGatherV,
    reduceScatter: transport.reduceScatter && profile.reduceScatter,
    allReduce: transport.allReduce && profile.allReduce,
    allToAllV: rank3(['no', 'equal-count', 'yes'] as const, transport.allToAllV, profile.allToAllV),
    premulSum: rank3(['no', 'single-node', 'yes'] as const, transport.premulSum, profile.premulSum),
    avg: transport.avg && profile.avg,
    broadcast: transport.broadcast && profile.broadcast,
    barrier: transport.barrier && profile.barrier,
    split: transport.split && profile.split,
  };
}

/** What to use instead of a missing collective; part of every "unsupported" error. */
export const ALTERNATIVES: Partial<Record<CollectiveOp | 'premul_sum' | 'avg', string>> = {
  all_to_all_v:
    'use dispatch = "allgather-padded" or "allgather-rs" (all_gather + reduce_scatter), or let the planner choose',
  all_gather_v: 'pad every contribution to the maximum count and use all_gather',
  premul_sum: 'multiply by the factor locally, then reduce with SUM (FSDP "SUM then divide")',
  avg: 'reduce with SUM, then divide by the group size',
};

export type CapabilityCheck = { ok: true } | { ok: false; reason: string; alternative: string };

/**
 * Whether `caps` allows this call. `equalCounts`: all_to_all_v counts are all equal; `multiNode`: the group spans
 * more than one node.
 */
export function checkCall(
  caps: Capabilities,
  op: CollectiveOp,
  reduce: ReduceOp | undefined,
  ctx: { equalCounts?: boolean; multiNode?: boolean } = {},
): CapabilityCheck {
  const no = (reason: string, alt: keyof typeof ALTERNATIVES): CapabilityCheck => ({
    ok: false,
    reason,
    alternative: ALTERNATIVES[alt] ?? 'none',
  });
  switch (op) {
    case 'all_gather':
      if (!caps.allGather) return no('all_gather is not supported', 'all_gather');
      break;
    case 'all_gather_v':
      if (!caps.allGatherV) return no('all_gather with uneven counts (all_gather_v) is not supported', 'all_gather_v');
      break;
    case 'reduce_scatter':
      if (!caps.reduceScatter) return no('reduce_scatter is not supported', 'reduce_scatter');
      break;
    case 'all_reduce':
      if (!caps.allReduce) return no('all_reduce is not supported', 'all_reduce');
      break;
    case 'all_to_all_v':
      if (caps.allToAllV === 'no') return no('all_to_all is not supported', 'all_to_all_v');
      if (caps.allToAllV === 'equal-count' && ctx.equalCounts === false) {
        return no('all_to_all supports only equal counts per rank here (got uneven counts)', 'all_to_all_v');
      }
      break;
    case 'broadcast':
      if (!caps.broadcast) return no('broadcast is not supported', 'broadcast');
      break;
    case 'barrier':
      if (!caps.barrier) return no('barrier is not supported', 'barrier');
      break;
  }
  if (reduce?.op === 'premul_sum') {
    if (caps.premulSum === 'no') return no('ReduceOp.PREMUL_SUM is not supported', 'premul_sum');
    if (caps.premulSum === 'single-node' && ctx.multiNode) {
      return no('ReduceOp.PREMUL_SUM is supported only within one node, and this group spans several', 'premul_sum');
    }
  }
  if (reduce?.op === 'avg' && !caps.avg) return no('ReduceOp.AVG is not supported', 'avg');
  return { ok: true };
}
