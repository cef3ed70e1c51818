// The plan of a job config: the planner's input from the config and the world size. The launcher plans with the
// capabilities the transport claims (FULL); a rank that probed its transport at start-up plans again with what
// the probe measured (probe-plan.ts), so the choice comes from profile ∩ measured.

import { FULL, type Capabilities } from '../comm/capabilities.ts';
import { planMesh } from '../comm/mesh-layout.ts';
import { makePlan, type Plan, type PlanInput } from '../protocols/planner.ts';
import type { ComputeDtype } from '../protocols/projection-memory.ts';
import { acModeOf, degreesOf, modelConfigOf, type JobConfig } from './job-config.ts';
import { microbatchesOf } from './train-rank.ts';
import type { ParamDtype } from '../tensor/precision.ts';

export function planJob(cfg: JobConfig, worldSize: number, transportCaps: Capabilities = FULL): Plan {
  return makePlan(planInputOf(cfg, worldSize, transportCaps));
}

/** What the planner (and `moe-actors project`) reads from a job config. */
export function planInputOf(cfg: JobConfig, worldSize: number, transportCaps: Capabilities = FULL): PlanInput {
  return {
    model: modelConfigOf(cfg),
    worldSize,
    degrees: degreesOf(cfg),
    transportCaps,
    transport: cfg.comm.transport,
    profile: cfg.comm.profile,
    dispatch: cfg.comm.dispatch,
    gradReduce: cfg.comm.grad_reduce,
    divideFactor: cfg.comm.gradient_divide_factor,
    reshard: cfg.parallelism.fsdp_reshard_after_forward,
    ac: acModeOf(cfg),
    localBatch: cfg.training.local_batch_size,
    seqLen: cfg.training.seq_len,
    paramDtype: cfg.training.mixed_precision_param as ParamDtype,
    reduceDtype: cfg.training.mixed_precision_reduce as ParamDtype,
    microbatches: microbatchesOf(cfg, batchDegree(cfg, worldSize)),
    ranksPerNode: cfg.comm.ranks_per_node,
    memory: { computeDtype: computeDtypeOf(cfg) },
  };
}

/** [training] mixed_precision_param as the projection's compute dtype (bfloat16 when the config asks for it). */
export function computeDtypeOf(cfg: JobConfig): ComputeDtype {
  return String((cfg.training as Record<string, unknown>).mixed_precision_param) === 'bfloat16'
    ? 'bfloat16'
    : 'float32';
}

/** dp_replicate · dp_shard (dp_shard = −1 resolved against the world size). */
function batchDegree(cfg: JobConfig, worldSize: number): number {
  const d = planMesh(degreesOf(cfg), worldSize, { allowUnsupported: true }).degrees;
  return d.dp_replicate * d.dp_shard;
}
