#!/usr/bin/env node
// Validates a job config (schema, overrides, model flavor, mesh) and prints its rank layout as shell assignments,
// for the launchers (scripts/launch-mpi.sh, scripts/aurora/run_aurora.sh):
//
//   node scripts/aurora/config-ranks.mjs --config C [--ranks N] [--section.key value ...]
//   → world=12 dp_replicate=1 dp_shard=12 ep=12   (one per line; exit 2 with the reason on stderr if invalid)
//
// torchtitan's rule (ParallelDims): world = dp_replicate · dp_shard · cp · tp · pp; EP borrows ranks from
// dp_shard · cp · tp, so ep·etp must divide it, and the experts must divide evenly over ep. dp_shard = -1 is
// inferred from --ranks.
import { register } from 'tsx/esm/api';
register();

const fail = (msg) => {
  process.stderr.write(`config-ranks: ${msg}\n`);
  process.exit(2);
};

const argv = process.argv.slice(2);
let config = null;
let ranks = null;
const overrides = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--config') config = argv[++i];
  else if (a === '--ranks') ranks = argv[++i];
  else overrides.push(a);
}
if (!config) fail('--config <file> is required');
if (ranks !== null && !/^[1-9]\d*$/.test(ranks)) fail(`--ranks must be a positive integer (got "${ranks}")`);

const { loadJobConfig } = await import('../../src/train/job-config.ts');
let cfg;
try {
  cfg = loadJobConfig(config, overrides);
} catch (e) {
  fail(e.message);
}
const p = cfg.parallelism;
const rep = p.data_parallel_replicate_degree;
const [cp, tp, pp, ep, etp] = [
  p.context_parallel_degree,
  p.tensor_parallel_degree,
  p.pipeline_parallel_degree,
  p.expert_parallel_degree,
  p.expert_tensor_parallel_degree,
];
for (const [name, v] of [
  ['context_parallel_degree', cp],
  ['tensor_parallel_degree', tp],
  ['pipeline_parallel_degree', pp],
  ['expert_tensor_parallel_degree', etp],
]) {
  if (v !== 1) fail(`${config}: [parallelism] ${name} = ${v}: moe-actors supports only 1`);
}
let shard = p.data_parallel_shard_degree;
const others = rep * cp * tp * pp;
let world;
if (ranks !== null) {
  world = Number(ranks);
  if (shard === -1) {
    if (world % others !== 0)
      fail(
        `${config}: ${world} ranks cannot be split into dp_replicate ${rep} × dp_shard (inferred): ${world} is not a multiple of ${others}`,
      );
    shard = world / others;
  } else if (others * shard !== world) {
    fail(
      `${config}: ranks not matching degrees: ${world} ranks requested but dp_replicate ${rep} × dp_shard ${shard} = ${others * shard}. ` +
        `Launch ${others * shard} ranks, or override the degrees (e.g. --parallelism.data_parallel_shard_degree ${world / others})`,
    );
  }
} else {
  if (shard === -1)
    fail(
      `${config}: data_parallel_shard_degree = -1 (infer from the world size): give the number of ranks (-n / --nodes)`,
    );
  world = others * shard;
}
if ((shard * cp * tp) % (ep * etp) !== 0) {
  fail(
    `${config}: expert_parallel_degree ${ep} must divide dp_shard·cp·tp = ${shard * cp * tp} (EP borrows its ranks from the FSDP dimension)`,
  );
}
try {
  const { resolveModelConfig } = await import('../../src/models/config.ts');
  const m = resolveModelConfig(cfg.model, cfg.training.seq_len);
  const E = m.args.moe_args.num_experts;
  if (E % ep !== 0)
    fail(`${config}: ${E} experts of ${m.flavor} cannot be split evenly over expert_parallel_degree ${ep}`);
} catch (e) {
  if (e?.code !== 'ERR_MODULE_NOT_FOUND') fail(`${config}: ${e.message}`);
}
process.stdout.write(`world=${world}\ndp_replicate=${rep}\ndp_shard=${shard}\nep=${ep}\n`);
