// Activation checkpointing modes (torchtitan-semantics.md §5.5). Same shape as protocols/train-step.machine.ts's AcMode, defined here
// because the models layer sits below the protocols and runs the recompute itself on one rank.

export type AcMode =
  | { mode: 'none' }
  | { mode: 'full' }
  | { mode: 'selective'; every: number }
  | { mode: 'selective'; op: true };

/**
 * Whether block `layer` is checkpoint-wrapped. Selective "k": torchtitan's counter c = layer + 1, wrapped when
 * c % k == 0 (layers 1, 3, 5, … for k = 2); k = 0 wraps every block. Selective "op" wraps every block with an op
 * policy; we recompute the whole block (same numerics and the same tokens_per_expert double count).
 */
export function isCheckpointed(layer: number, ac: AcMode): boolean {
  switch (ac.mode) {
    case 'none':
      return false;
    case 'full':
      return true;
    case 'selective':
      if ('op' in ac) return true;
      return ac.every <= 0 ? true : (layer + 1) % ac.every === 0;
  }
}

/** From torchtitan's [activation_checkpoint] mode + selective_ac_option ("2", "op", …). */
export function parseAcMode(mode: string, selectiveOption: string | number = '2'): AcMode {
  if (mode === 'none' || mode === 'full') return { mode };
  if (mode === 'selective') {
    const opt = String(selectiveOption);
    if (opt === 'op') return { mode: 'selective', op: true };
    const k = Number(opt);
    if (!Number.isInteger(k) || k < 0) {
      throw new Error(`activation_checkpoint.selective_ac_option must be "op" or a non-negative integer, got "${opt}"`);
    }
    return { mode: 'selective', every: k };
  }
  throw new Error(
    `activation_checkpoint.mode must be one of "none", "selective", "full" (got "${mode}"; "memory_budget" needs torch.compile and is not supported)`,
  );
}
