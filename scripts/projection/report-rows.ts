// Every row of the Aurora report's tables (shared/reference/seed-torchtitan-xpu.md) that docs/projection.md checks:
// the report's TPS, MFU and memory per rank, and the config + overrides that translate it (configs/README.md).
// Ranges in the report ("55-62k") are taken at their midpoint.

export interface ReportRow {
  id: string;
  table: string;
  label: string;
  config: string;
  overrides: string[];
  tps: number;
  /** Percent, or null where the report gives none. */
  mfu: number | null;
  memGib: number;
  /**
   * The report's run used torch.compile: the DeepSeek-V3 4×512 TOMLs of n-getty/torchtitan_xpu
   * (deepseek_1b_moe_noep_xpu.toml, deepseek_1b_ep12_xpu.toml: [compile] enable = true); their 16×2048 twins and
   * every Llama4 TOML run eager.
   */
  torchCompile?: boolean;
}

const big = ['--training.local_batch_size', '16', '--training.seq_len', '2048'];

export const TABLES = {
  dsv3: 'DeepSeek-V3 1B (baseline_model_1b_12rank)',
  mfu: 'MFU: batch size impact (DeepSeek-V3 1B)',
  large: 'Llama4 large: benchmark results',
  real: 'Llama4 large (largemodel_12_rank): realistic memory',
  medium: 'Llama4 medium (mediummodel_12_rank)',
  debug: 'Llama4 debug (debugmodel_12_rank)',
} as const;

export const REPORT_ROWS: ReportRow[] = [
  {
    id: 'dsv3_noep_fw',
    table: TABLES.dsv3,
    label: 'MoE (no EP), Frameworks PT 2.8',
    config: 'configs/deepseek_v3_1b_noep.toml',
    overrides: [],
    tps: 2577,
    mfu: 1.45,
    memGib: 7.1,
    torchCompile: true,
  },
  {
    id: 'dsv3_noep_dev',
    table: TABLES.dsv3,
    label: 'MoE (no EP), Dev PT 2.9',
    config: 'configs/deepseek_v3_1b_noep.toml',
    overrides: [],
    tps: 2620,
    mfu: 1.47,
    memGib: 7.1,
    torchCompile: true,
  },
  {
    id: 'dsv3_ep12_fw',
    table: TABLES.dsv3,
    label: 'EP=12 (FSDP), Frameworks PT 2.8',
    config: 'configs/deepseek_v3_1b_ep12.toml',
    overrides: [],
    tps: 6292,
    mfu: 3.54,
    memGib: 14.7,
    torchCompile: true,
  },
  {
    id: 'dsv3_ep12_dev',
    table: TABLES.dsv3,
    label: 'EP=12 (FSDP), Dev PT 2.9',
    config: 'configs/deepseek_v3_1b_ep12.toml',
    overrides: [],
    tps: 5618,
    mfu: 3.16,
    memGib: 14.5,
    torchCompile: true,
  },
  {
    id: 'dsv3_hsdp_dev',
    table: TABLES.dsv3,
    label: 'EP=6 (HSDP, Repl=2), Dev PT 2.9',
    config: 'configs/deepseek_v3_1b_hsdp_ep6.toml',
    overrides: [],
    tps: 7330,
    mfu: 4.13,
    memGib: 5.0,
    torchCompile: true,
  },
  {
    id: 'mfu_noep_4x512',
    table: TABLES.mfu,
    label: 'MoE (no EP), 4×512',
    config: 'configs/deepseek_v3_1b_noep.toml',
    overrides: [],
    tps: 2577,
    mfu: 1.45,
    memGib: 7.1,
    torchCompile: true,
  },
  {
    id: 'mfu_noep_16x2048',
    table: TABLES.mfu,
    label: 'MoE (no EP), 16×2048',
    config: 'configs/deepseek_v3_1b_noep.toml',
    overrides: big,
    tps: 16242,
    mfu: 10.17,
    memGib: 60.8,
  },
  {
    id: 'mfu_ep12_4x512',
    table: TABLES.mfu,
    label: 'EP=12, 4×512',
    config: 'configs/deepseek_v3_1b_ep12.toml',
    overrides: [],
    tps: 6292,
    mfu: 3.54,
    memGib: 14.7,
    torchCompile: true,
  },
  {
    id: 'mfu_ep12_16x2048',
    table: TABLES.mfu,
    label: 'EP=12, 16×2048',
    config: 'configs/deepseek_v3_1b_ep12.toml',
    overrides: big,
    tps: 13889,
    mfu: 8.7,
    memGib: 61.0,
  },
  {
    id: 'large_dense_equiv',
    table: TABLES.large,
    label: 'Dense Equivalent ("~50B")',
    config: 'configs/llama4_large_dense_equivalent.toml',
    overrides: [],
    tps: 26,
    mfu: 1.94,
    memGib: 53.9,
  },
  {
    id: 'large_noep',
    table: TABLES.large,
    label: 'MoE No-EP',
    config: 'configs/llama4_large_noep.toml',
    overrides: [],
    tps: 260,
    mfu: 3.95,
    memGib: 48.4,
  },
  {
    id: 'large_ep12',
    table: TABLES.large,
    label: 'MoE EP=12',
    config: 'configs/llama4_large_ep12.toml',
    overrides: [],
    tps: 684,
    mfu: 10.39,
    memGib: 29.2,
  },
  {
    id: 'large_ep12_b8',
    table: TABLES.large,
    label: 'MoE EP=12 (Max), batch 8',
    config: 'configs/llama4_large_ep12_maxbatch.toml',
    overrides: [],
    tps: 935,
    mfu: 14.21,
    memGib: 47.6,
  },
  {
    id: 'real_dense',
    table: TABLES.real,
    label: 'Dense (no MoE)',
    config: 'configs/llama4_large_dense.toml',
    overrides: [],
    tps: 914,
    mfu: 14,
    memGib: 21,
  },
  {
    id: 'real_noep',
    table: TABLES.real,
    label: 'MoE (no EP)',
    config: 'configs/llama4_large_noep.toml',
    overrides: [],
    tps: 263,
    mfu: 4,
    memGib: 48,
  },
  {
    id: 'real_ep12',
    table: TABLES.real,
    label: 'MoE + EP=12',
    config: 'configs/llama4_large_ep12.toml',
    overrides: [],
    tps: 710,
    mfu: 11,
    memGib: 29,
  },
  {
    id: 'medium_dense',
    table: TABLES.medium,
    label: 'Dense (no MoE)',
    config: 'configs/llama4_medium_dense.toml',
    overrides: [],
    tps: 4842,
    mfu: 14.5,
    memGib: 9.25,
  },
  {
    id: 'medium_noep',
    table: TABLES.medium,
    label: 'MoE (no EP)',
    config: 'configs/llama4_medium_noep.toml',
    overrides: [],
    tps: 2212,
    mfu: 6.6,
    memGib: 14.75,
  },
  {
    id: 'medium_ep12',
    table: TABLES.medium,
    label: 'MoE + EP=12',
    config: 'configs/llama4_medium_ep12.toml',
    overrides: [],
    tps: 3329,
    mfu: 10.0,
    memGib: 15.2,
  },
  {
    id: 'debug_dense',
    table: TABLES.debug,
    label: 'Dense',
    config: 'configs/llama4_dense12.toml',
    overrides: [],
    tps: 98000,
    mfu: null,
    memGib: 1.0,
  },
  {
    id: 'debug_ep12',
    table: TABLES.debug,
    label: 'EP=12',
    config: 'configs/llama4_ep12_fallback.toml',
    overrides: [],
    tps: 58500,
    mfu: null,
    memGib: 5.7,
  },
];
