// torchtitan's MoEArgs (torchtitan/models/moe/moe.py): the routing and expert hyper-parameters shared by Llama4 and
// DeepSeek-V3. Field names are torchtitan's so that `[model.args.moe_args]` in a TOML reads like the Python.

export type ScoreFunc = 'sigmoid' | 'softmax';

export interface MoEArgs {
  num_experts: number;
  num_shared_experts: number;
  score_func: ScoreFunc;
  route_norm: boolean;
  route_scale: number;
  gate_bias: boolean;
  score_before_experts: boolean;
  top_k: number;
  num_expert_groups: number | null;
  num_limited_groups: number | null;
  /** Forced false on CPU by torchtitan's update_from_config; kept only so configs that set it parse. */
  use_grouped_mm: boolean;
  /** null disables expert_bias (and the auxiliary-loss-free update). */
  load_balance_coeff: number | null;
  _debug_force_load_balance: boolean;
}

export function defaultMoEArgs(): MoEArgs {
  return {
    num_experts: 8,
    num_shared_experts: 1,
    score_func: 'sigmoid',
    route_norm: false,
    route_scale: 1.0,
    gate_bias: false,
    score_before_experts: true,
    top_k: 1,
    num_expert_groups: null,
    num_limited_groups: null,
    use_grouped_mm: true,
    load_balance_coeff: 1e-3,
    _debug_force_load_balance: false,
  };
}

/** The constraints torchtitan asserts when it builds the router; thrown at config time so a bad TOML fails early. */
export function validateMoEArgs(m: MoEArgs, where: string): void {
  const fail = (msg: string): never => {
    throw new Error(`${where}.moe_args: ${msg}`);
  };
  if (m.num_experts < 1) fail(`num_experts must be ≥ 1 (got ${m.num_experts})`);
  if (m.top_k < 1 || m.top_k > m.num_experts)
    fail(`top_k must be in [1, num_experts=${m.num_experts}] (got ${m.top_k})`);
  if (m.num_shared_experts < 0) fail(`num_shared_experts must be ≥ 0 (got ${m.num_shared_experts})`);
  if (m.load_balance_coeff !== null && !(m.load_balance_coeff > 0)) {
    fail(`load_balance_coeff must be > 0 when set (got ${m.load_balance_coeff})`);
  }
  if (m.num_expert_groups !== null) {
    const G = m.num_expert_groups;
    if (m.num_limited_groups === null) fail('num_expert_groups is set, so num_limited_groups must be set too');
    if (G < 1 || m.num_experts % G !== 0)
      fail(`num_experts=${m.num_experts} must be divisible by num_expert_groups=${G}`);
    if (m.num_experts / G < 2)
      fail(`each expert group needs ≥ 2 experts (num_experts / num_expert_groups = ${m.num_experts / G})`);
    const lim = m.num_limited_groups!;
    if (lim < 1 || lim > G) fail(`num_limited_groups must be in [1, num_expert_groups=${G}] (got ${lim})`);
    if (m.top_k > lim * (m.num_experts / G)) {
      fail(`top_k=${m.top_k} exceeds the experts left after node limiting (${lim} groups × ${m.num_experts / G})`);
    }
  }
}
