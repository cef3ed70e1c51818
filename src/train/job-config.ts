// Job configs: torchtitan's TOML sections and field names (torchtitan/config/job_config.py at the spec's commit),
// plus ours ([comm], [trace]). Parsed with smol-toml, checked against a schema (unknown sections/fields, wrong
// types, bad values → an error naming the field, the value and the rule), overridable from the command line as
// `--training.steps 20`. The [model] section is resolved by the models layer (flavors, [model.args] overrides).

import { existsSync, readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { resolveModelConfig, type ResolvedModelConfig } from '../models/config.ts';

type FieldType = 'string' | 'number' | 'integer' | 'boolean' | 'string|integer' | 'number|null' | 'table';

interface FieldSpec {
  type: FieldType;
  default: unknown;
  /** Allowed values for strings. */
  oneOf?: readonly string[];
  /** Extra rule: returns an error text (without the field name) or null. */
  check?: (v: any) => string | null;
  doc: string;
}

const positive = (v: number) => (v > 0 ? null : 'must be > 0');
const nonNegative = (v: number) => (v >= 0 ? null : 'must be ≥ 0');
const atLeastOne = (v: number) => (v >= 1 ? null : 'must be ≥ 1');
const unit = (v: number) => (v >= 0 && v <= 1 ? null : 'must be between 0 and 1');
const beta = (v: number) => (v >= 0 && v < 1 ? null : 'must be in [0, 1)');
/** Node's timers hold at most 2^31−1 ms (≈ 24.8 days); a longer one fires at once ("timeout after Infinity ms"). */
export const MAX_TIMER_SECONDS = Math.floor((2 ** 31 - 1) / 1000);
const timeoutSeconds = (v: number) =>
  v > 0 && v <= MAX_TIMER_SECONDS
    ? null
    : `must be > 0 and ≤ ${MAX_TIMER_SECONDS} s (Node's timers hold at most 2^31−1 ms ≈ 24.8 days)`;
/** A folder or file name, not a path: it must not leave the folder it is joined to. */
export function nameProblem(v: string): string | null {
  if (v === '') return null;
  if (v === '.' || v === '..') return `must be a name, not "${v}"`;
  if (/[/\\\0]/.test(v)) return 'must be a name, not a path (no "/", "\\" or NUL); put the folder in [job] dump_folder';
  if (Buffer.byteLength(v) > 255) return 'must be at most 255 bytes (a file name)';
  return null;
}
/** A path below the run folder: relative, no ".." component. */
function insideRunDir(v: string): string | null {
  if (v === '' || isAbsolute(v)) return 'must be a relative path inside the run folder';
  if (v.split(/[/\\]/).some((p) => p === '..')) return 'must stay inside the run folder (no ".." component)';
  return null;
}

export const SCHEMA = {
  job: {
    dump_folder: { type: 'string', default: './outputs', doc: 'where runs write their folder outputs/<run>/' },
    description: { type: 'string', default: '', doc: 'free text' },
    run_name: {
      type: 'string',
      default: '',
      check: nameProblem,
      doc: 'run folder name (default: config name + timestamp); a name, not a path',
    },
  },
  model: {
    name: { type: 'string', default: 'llama4', oneOf: ['llama4', 'deepseek_v3'], doc: 'model family' },
    flavor: { type: 'string', default: 'debugmodel', doc: 'a flavor name or "custom" (the family defaults)' },
    args: { type: 'table', default: undefined, doc: 'overrides of any model argument under torchtitan field names' },
    hf_assets_path: {
      type: 'string',
      default: '',
      doc: 'accepted for torchtitan compatibility (not read; name the tokenizer folder with tokenizer_path)',
    },
    tokenizer_path: {
      type: 'string',
      default: '',
      doc: 'a folder with a Hugging Face tokenizer.json (e.g. data/tokenizer); empty = the byte tokenizer',
    },
  },
  optimizer: {
    name: {
      type: 'string',
      default: 'AdamW',
      oneOf: ['AdamW', 'Adam'],
      doc: 'AdamW: decoupled weight decay; Adam: L2 decay added to the gradient (torch.optim.Adam)',
    },
    lr: { type: 'number', default: 8e-4, check: positive, doc: 'peak learning rate' },
    eps: { type: 'number', default: 1e-8, check: positive, doc: 'Adam epsilon' },
    beta1: { type: 'number', default: 0.9, check: beta, doc: '' },
    beta2: { type: 'number', default: 0.95, check: beta, doc: '' },
    weight_decay: {
      type: 'number',
      default: 0.1,
      check: nonNegative,
      doc: 'decoupled weight decay, on every parameter',
    },
    implementation: {
      type: 'string',
      default: 'fused',
      oneOf: ['fused', 'foreach', 'for-loop'],
      doc: 'accepted; one native kernel serves all',
    },
  },
  lr_scheduler: {
    warmup_steps: { type: 'integer', default: 200, check: nonNegative, doc: '' },
    decay_ratio: {
      type: 'number|null',
      default: null,
      check: (v: number | null) => (v === null ? null : unit(v)),
      doc: 'fraction of steps spent decaying; unset = all after warmup',
    },
    decay_type: { type: 'string', default: 'linear', oneOf: ['linear', 'sqrt', 'cosine'], doc: '' },
    min_lr_factor: { type: 'number', default: 0.0, check: unit, doc: '' },
  },
  training: {
    local_batch_size: { type: 'integer', default: 8, check: atLeastOne, doc: 'sequences per rank per microbatch' },
    global_batch_size: {
      type: 'integer',
      default: -1,
      doc: '-1 = local_batch_size × data-parallel degree (no accumulation)',
    },
    seq_len: {
      type: 'integer',
      default: 2048,
      check: (v: number) =>
        v >= 2 && v % 2 === 0 ? null : 'must be even and ≥ 2 (torchtitan asserts seq_len % (2·cp·tp) == 0)',
      doc: '',
    },
    max_norm: { type: 'number', default: 1.0, check: positive, doc: 'gradient clipping threshold' },
    steps: { type: 'integer', default: 10000, check: atLeastOne, doc: '' },
    dataset: {
      type: 'string',
      default: 'synthetic',
      oneOf: ['synthetic', 'text', 'tokens', 'c4_test'],
      doc: 'synthetic (seeded), text (a .txt/.jsonl file, byte tokenizer), tokens (binary uint16/int32 file)',
    },
    dataset_path: {
      type: 'string',
      default: '',
      doc: 'file for dataset = text (.txt, .jsonl, .parquet or a folder of .parquet shards) | tokens (default: the bundled text sample)',
    },
    dataset_text_field: {
      type: 'string',
      default: 'text',
      doc: 'the column of .parquet / the field of .jsonl records that holds the text',
    },
    mixed_precision_param: {
      type: 'string',
      default: 'float32',
      oneOf: ['float32', 'bfloat16'],
      doc: 'matmul input dtype (torchtitan: bfloat16): bf16 inputs, f32 accumulation; master weights, AdamW, loss, norms, softmax, router stay f32',
    },
    mixed_precision_reduce: {
      type: 'string',
      default: 'float32',
      oneOf: ['float32', 'bfloat16'],
      doc: 'FSDP gradient reduce_scatter dtype (torchtitan: float32); bfloat16 = bf16 on the wire, f32 accumulation, one rounding',
    },
  },
  parallelism: {
    data_parallel_replicate_degree: { type: 'integer', default: 1, check: atLeastOne, doc: 'HSDP replicas' },
    data_parallel_shard_degree: {
      type: 'integer',
      default: -1,
      check: (v: number) => (v === -1 || v >= 1 ? null : 'must be ≥ 1 or -1 (infer)'),
      doc: '',
    },
    tensor_parallel_degree: { type: 'integer', default: 1, check: atLeastOne, doc: 'validated; only 1 is supported' },
    pipeline_parallel_degree: { type: 'integer', default: 1, check: atLeastOne, doc: 'validated; only 1 is supported' },
    context_parallel_degree: { type: 'integer', default: 1, check: atLeastOne, doc: 'validated; only 1 is supported' },
    expert_parallel_degree: { type: 'integer', default: 1, check: atLeastOne, doc: '' },
    expert_tensor_parallel_degree: { type: 'integer', default: 1, check: atLeastOne, doc: '' },
    fsdp_reshard_after_forward: { type: 'string', default: 'default', oneOf: ['default', 'always', 'never'], doc: '' },
  },
  activation_checkpoint: {
    mode: { type: 'string', default: 'selective', oneOf: ['none', 'selective', 'full'], doc: '' },
    selective_ac_option: {
      type: 'string|integer',
      default: '2',
      check: (v: string | number) =>
        String(v) === 'op' || (/^\d+$/.test(String(v)) && Number(v) >= 1)
          ? null
          : 'must be a positive integer k (every k-th block; torchtitan rejects k ≤ 0) or "op"',
      doc: '',
    },
  },
  checkpoint: {
    enable: { type: 'boolean', default: false, doc: '' },
    folder: { type: 'string', default: 'checkpoint', check: insideRunDir, doc: 'relative to the run folder' },
    interval: { type: 'integer', default: 500, check: atLeastOne, doc: 'steps between checkpoints' },
    keep_latest_k: { type: 'integer', default: 0, check: nonNegative, doc: '0 keeps all' },
    load_step: { type: 'integer', default: -1, doc: '-1 = latest complete checkpoint' },
    initial_load_path: {
      type: 'string',
      default: '',
      doc: 'a checkpoint folder (or weights .safetensors) to start from',
    },
    async_mode: {
      type: 'string',
      default: 'disabled',
      oneOf: ['disabled', 'async'],
      doc: 'async: stage a copy and let the side pool serialize, hash and write it while training goes on',
    },
  },
  metrics: {
    log_freq: { type: 'integer', default: 10, check: atLeastOne, doc: '' },
    disable_color_printing: { type: 'boolean', default: false, doc: '' },
    peak_flops: {
      type: 'number',
      default: 0,
      check: nonNegative,
      doc: 'FLOP/s per rank for MFU; 0 = the sgemm peak measured at startup',
    },
    save_jsonl: { type: 'boolean', default: true, doc: 'metrics.jsonl in the run folder' },
  },
  debug: {
    seed: { type: 'integer', default: 0, doc: 'init and data seed' },
    moe_force_load_balance: { type: 'boolean', default: false, doc: 'round-robin routing (torchtitan debug flag)' },
  },
  comm: {
    transport: {
      type: 'string',
      default: 'threads',
      oneOf: ['inproc', 'threads', 'mpi', 'ccl'],
      doc: 'where ranks live (ccl: oneCCL collectives in an MPI job)',
    },
    ranks: {
      type: 'integer',
      default: 1,
      check: atLeastOne,
      doc: 'world size on inproc/threads (mpi, ccl: from mpiexec)',
    },
    profile: {
      type: 'string',
      default: 'full',
      oneOf: ['full', 'xccl-2025', 'xccl-2026', 'oneccl-v2'],
      doc: 'narrow the transport to a real backend’s limits',
    },
    dispatch: {
      type: 'string',
      default: 'auto',
      oneOf: ['auto', 'a2a', 'allgather-padded', 'allgather-rs'],
      doc: 'EP dispatch strategy',
    },
    grad_reduce: {
      type: 'string',
      default: 'auto',
      oneOf: ['auto', 'sum', 'sum-divide', 'premul-sum'],
      doc: 'FSDP gradient reduction',
    },
    gradient_divide_factor: {
      type: 'number',
      default: 1,
      check: positive,
      doc: 'torchtitan uses 1 (the loss is divided by the global token count)',
    },
    timeout_seconds: {
      type: 'number',
      default: 100,
      check: timeoutSeconds,
      doc: 'per collective after the first step (torchtitan train_timeout_seconds)',
    },
    init_timeout_seconds: {
      type: 'number',
      default: 300,
      check: timeoutSeconds,
      doc: 'per collective during start-up and the first step',
    },
    ranks_per_node: {
      type: 'integer',
      default: 0,
      check: nonNegative,
      doc: '0 = all ranks on one node (mpi: asked from MPI)',
    },
    probe: {
      type: 'string',
      default: 'auto',
      oneOf: ['auto', 'on', 'off'],
      doc: 'run every collective once at start-up and plan from what worked (auto: on for mpi and ccl)',
    },
    seed: { type: 'integer', default: 0, doc: 'inproc arrival-order seed' },
    flight_recorder_entries: { type: 'integer', default: 2000, check: atLeastOne, doc: '' },
    blas_threads: { type: 'integer', default: 0, check: nonNegative, doc: '0 = cores / ranks' },
  },
  trace: {
    enable: { type: 'boolean', default: true, doc: 'record per-rank state transitions to trace.json' },
    live: { type: 'boolean', default: false, doc: 'one refreshing terminal line per rank' },
    max_events: {
      type: 'integer',
      default: 2_000_000,
      check: atLeastOne,
      doc: 'events a rank writes to events/rank-N.jsonl at most (later ones are counted, not written; the timeline then ends early and says so)',
    },
  },
} as const satisfies Record<string, Record<string, FieldSpec>>;

type Schema = typeof SCHEMA;
type ValueOf<F> = F extends { oneOf: readonly (infer O)[] }
  ? O
  : F extends { type: 'number' | 'integer' }
    ? number
    : F extends { type: 'boolean' }
      ? boolean
      : F extends { type: 'string|integer' }
        ? string | number
        : F extends { type: 'number|null' }
          ? number | null
          : F extends { type: 'table' }
            ? Record<string, unknown> | undefined
            : string;

export type JobConfig = { [S in keyof Schema]: { [K in keyof Schema[S]]: ValueOf<Schema[S][K]> } } & {
  /** Where the config came from (file path or "<defaults>"). */
  source: string;
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function closest(name: string, options: readonly string[]): string | null {
  let best: string | null = null;
  let bestD = Infinity;
  for (const o of options) {
    const d = editDistance(name, o);
    if (d < bestD) {
      bestD = d;
      best = o;
    }
  }
  return bestD <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  const dp = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) dp[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      dp[i]![j] = Math.min(
        dp[i - 1]![j]! + 1,
        dp[i]![j - 1]! + 1,
        dp[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
  return dp[a.length]![b.length]!;
}

function describe(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? `[${v.map(describe).join(', ')}]` : String(v);
}

function checkField(section: string, key: string, spec: FieldSpec, v: unknown, where: string): unknown {
  const field = `[${section}] ${key}`;
  const bad = (rule: string) => new ConfigError(`${where}: ${field} = ${describe(v)}: ${rule}`);
  // TOML integers arrive as bigint (parsed with integersAsBigInt), floats as number: `steps = 3.0` or `1e308` is
  // a float, not an integer, whatever its value.
  if (typeof v === 'bigint') {
    if (!Number.isSafeInteger(Number(v))) throw bad(`is out of range (integers up to ±${Number.MAX_SAFE_INTEGER})`);
    v = Number(v);
  } else if ((spec.type === 'integer' || spec.type === 'string|integer') && typeof v === 'number') {
    throw bad(
      `must be an integer, not a float${Number.isSafeInteger(v) ? ` (write ${v}, without a decimal point or exponent)` : ''}`,
    );
  }
  switch (spec.type) {
    case 'string':
      if (typeof v !== 'string') throw bad('must be a string');
      break;
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v)) throw bad('must be a number');
      break;
    case 'integer':
      if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad('must be an integer');
      break;
    case 'boolean':
      if (typeof v !== 'boolean') throw bad('must be true or false');
      break;
    case 'string|integer':
      if (typeof v !== 'string' && !(typeof v === 'number' && Number.isInteger(v)))
        throw bad('must be a string or an integer');
      break;
    case 'number|null':
      if (v !== null && (typeof v !== 'number' || !Number.isFinite(v))) throw bad('must be a number');
      break;
    case 'table':
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('must be a table');
      break;
  }
  if (spec.oneOf && !spec.oneOf.includes(v as string)) {
    throw bad(`must be one of ${spec.oneOf.map((o) => JSON.stringify(o)).join(', ')}`);
  }
  const rule = spec.check?.(v as never);
  if (rule) throw bad(rule);
  return v;
}

/** Merges a parsed TOML document over the defaults, rejecting anything the schema does not know. */
export function buildConfig(doc: Record<string, unknown>, where: string): JobConfig {
  const out: Record<string, Record<string, unknown>> = {};
  for (const [section, fields] of Object.entries(SCHEMA)) {
    out[section] = {};
    for (const [k, spec] of Object.entries(fields as Record<string, FieldSpec>)) out[section]![k] = spec.default;
  }
  for (const [section, body] of Object.entries(doc)) {
    const fields = (SCHEMA as Record<string, Record<string, FieldSpec>>)[section];
    if (!fields) {
      const hint = closest(section, Object.keys(SCHEMA));
      throw new ConfigError(
        `${where}: unknown section [${section}]${hint ? ` (did you mean [${hint}]?)` : ''}; known sections: ${Object.keys(SCHEMA).join(', ')}`,
      );
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) {
      throw new ConfigError(`${where}: "${section}" must be a table ([${section}])`);
    }
    for (const [k, v] of Object.entries(body as Record<string, unknown>)) {
      const spec = fields[k];
      if (!spec) {
        const hint = closest(k, Object.keys(fields));
        throw new ConfigError(
          `${where}: unknown field [${section}] ${k}${hint ? ` (did you mean ${hint}?)` : ''}; fields of [${section}]: ${Object.keys(fields).join(', ')}`,
        );
      }
      out[section]![k] =
        spec.type === 'table'
          ? plainNumbers(checkField(section, k, spec, v, where))
          : checkField(section, k, spec, v, where);
    }
  }
  return { ...(out as unknown as Omit<JobConfig, 'source'>), source: where } as JobConfig;
}

/** [model.args] tables go to the models layer, which checks numbers as numbers: TOML's bigints become numbers. */
function plainNumbers(v: unknown): unknown {
  if (typeof v === 'bigint') return Number(v);
  if (Array.isArray(v)) return v.map(plainNumbers);
  if (v && typeof v === 'object' && !(v instanceof Date))
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plainNumbers(x)]));
  return v;
}

/** Parses `--section.key value` / `--section.key=value` pairs; returns them as a TOML-shaped object. */
export function parseOverrides(args: readonly string[]): Record<string, Record<string, unknown>> {
  const out: Record<string, Record<string, unknown>> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--'))
      throw new ConfigError(`unexpected argument "${a}"; overrides look like --training.steps 20`);
    let key = a.slice(2);
    let value: string | undefined;
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    }
    const dot = key.indexOf('.');
    if (dot < 0) throw new ConfigError(`override "${a}" must name a section and a field, e.g. --training.steps 20`);
    const section = key.slice(0, dot);
    const field = key.slice(dot + 1);
    // [model.args] and its sub-tables are the models layer's (it checks names and types): --model.args.dim 64,
    // --model.args.moe_args.num_experts 8.
    const modelArg = section === 'model' && field.startsWith('args.') ? field.split('.').slice(1) : null;
    if (modelArg && modelArg.some((k) => k === '')) throw new ConfigError(`override "${a}" has an empty field name`);
    const spec = (SCHEMA as Record<string, Record<string, FieldSpec>>)[section]?.[field];
    if (value === undefined) {
      const next = args[i + 1];
      // An option never takes the next option as its value: `--metrics.enable_tensorboard --training.steps 3` is an
      // unknown field (reported with its closest match), not the value "--training.steps" followed by a stray "3".
      const nextIsOption = next !== undefined && next.startsWith('--');
      if ((spec?.type === 'boolean' || modelArg || !spec) && (next === undefined || nextIsOption)) value = 'true';
      else {
        if (next === undefined || nextIsOption)
          throw new ConfigError(`override --${key} needs a value, e.g. --${key} ${exampleValue(spec)}`);
        value = next;
        i++;
      }
    }
    if (modelArg) {
      let t = ((out.model ??= {}).args ??= {}) as Record<string, unknown>;
      for (const k of modelArg.slice(0, -1)) t = (t[k] ??= {}) as Record<string, unknown>;
      t[modelArg.at(-1)!] = coerceModelArg(value);
      continue;
    }
    (out[section] ??= {})[field] = coerce(value, spec);
  }
  return out;
}

function exampleValue(spec: FieldSpec | undefined): string {
  if (spec?.oneOf) return spec.oneOf[0]!;
  return spec?.default === undefined || spec.default === '' || spec.default === null ? '…' : String(spec.default);
}

/** A command-line value for a model arg, typed as TOML would type it (the models layer then checks it). */
function coerceModelArg(raw: string): unknown {
  if (raw === 'true' || raw === 'false') return raw === 'true';
  if (raw === 'null' || raw === 'none') return null;
  return raw.trim() !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
}

function coerce(raw: string, spec: FieldSpec | undefined): unknown {
  if (!spec) return raw; // unknown fields are reported by buildConfig with the usual message
  switch (spec.type) {
    case 'integer':
      // As TOML: digits are an integer (bigint, checked for range), anything else numeric is a float (refused).
      if (/^[-+]?\d+$/.test(raw.trim())) return BigInt(raw.trim());
      return raw.trim() !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
    case 'number':
      return raw.trim() !== '' && !Number.isNaN(Number(raw)) ? Number(raw) : raw;
    case 'number|null':
      return raw === 'null' || raw === 'none'
        ? null
        : raw.trim() !== '' && !Number.isNaN(Number(raw))
          ? Number(raw)
          : raw;
    case 'boolean':
      return raw === 'true' ? true : raw === 'false' ? false : raw;
    case 'string|integer':
      return /^-?\d+$/.test(raw) ? Number(raw) : raw;
    default:
      return raw;
  }
}

function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] =
      prev && typeof prev === 'object' && !Array.isArray(prev) && v && typeof v === 'object' && !Array.isArray(v)
        ? deepMerge(prev as Record<string, unknown>, v as Record<string, unknown>)
        : v;
  }
  return out;
}

/** Reads a TOML job config (or none: all defaults) and applies command-line overrides. */
export function loadJobConfig(path: string | null, overrides: readonly string[] = []): JobConfig {
  let doc: Record<string, unknown> = {};
  const where = path ?? '<defaults>';
  if (path) {
    let bytes: Buffer;
    try {
      bytes = readFileSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new ConfigError(
        `cannot read config ${path}: ${code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder; give a .toml file' : (e as Error).message}`,
      );
    }
    const text = decodeText(bytes, `config ${path}`, 'a TOML job config');
    try {
      doc = parseToml(text, { integersAsBigInt: true }) as Record<string, unknown>;
    } catch (e) {
      throw new ConfigError(`${path}: invalid TOML: ${(e as Error).message}`);
    }
  }
  return buildConfig(deepMerge(doc, parseOverrides(overrides)), where);
}

/** Largest text file (config) read: a job config is a few KB; a huge file is not one. */
export const MAX_CONFIG_BYTES = 1 << 20;

/**
 * Bytes as UTF-8 text, or a ConfigError naming the file: TOML is UTF-8 (a Latin-1 or binary file would be parsed
 * into garbage names and values), and a NUL byte means a binary file, not text.
 */
export function decodeText(bytes: Uint8Array, what: string, expected: string): string {
  if (bytes.length > MAX_CONFIG_BYTES)
    throw new ConfigError(
      `${what}: ${bytes.length} bytes is too large for ${expected} (at most ${MAX_CONFIG_BYTES}); is it the right file?`,
    );
  const nul = bytes.indexOf(0);
  if (nul >= 0)
    throw new ConfigError(`${what} is binary (a NUL byte at offset ${nul}), not ${expected}; give the text file`);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new ConfigError(
      `${what} is not valid UTF-8 text; TOML must be UTF-8: re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)`,
    );
  }
}

/**
 * Paths the config names that must exist, checked before any rank starts (the launcher and `plan` call it; the
 * ranks do not need to stat them again).
 */
export function configPathProblems(cfg: JobConfig): string[] {
  const out: string[] = [];
  const hf = cfg.model.hf_assets_path;
  if (hf && !existsSync(hf))
    out.push(
      `[model] hf_assets_path = ${JSON.stringify(hf)} does not exist; remove the field (the byte tokenizer is built in) or point it at the assets folder`,
    );
  return out;
}

/** Settings torchtitan accepts with a warning (and adjusts), as warnings of ours. */
export function configWarnings(cfg: JobConfig): string[] {
  const out: string[] = [];
  const { warmup_steps } = cfg.lr_scheduler;
  const { steps } = cfg.training;
  if (warmup_steps > steps) {
    out.push(
      `[lr_scheduler] warmup_steps (${warmup_steps}) exceeds [training] steps (${steps}); warmup is shortened to ${steps} steps (as torchtitan does), so the LR never reaches its decay phase`,
    );
  }
  return out;
}

/** The selective-AC option as the train-step machine wants it. */
export function acModeOf(cfg: JobConfig): import('../protocols/train-step.machine.ts').AcMode {
  const mode = cfg.activation_checkpoint.mode;
  if (mode === 'none') return { mode: 'none' };
  if (mode === 'full') return { mode: 'full' };
  const opt = String(cfg.activation_checkpoint.selective_ac_option);
  return opt === 'op' ? { mode: 'selective', op: true } : { mode: 'selective', every: Number(opt) };
}

/** [parallelism] as mesh degrees (torchtitan's ParallelDims fields). */
export function degreesOf(cfg: JobConfig): import('../comm/mesh-layout.ts').ParallelDegrees {
  const p = cfg.parallelism;
  return {
    dp_replicate: p.data_parallel_replicate_degree,
    dp_shard: p.data_parallel_shard_degree,
    tp: p.tensor_parallel_degree,
    pp: p.pipeline_parallel_degree,
    cp: p.context_parallel_degree,
    ep: p.expert_parallel_degree,
    etp: p.expert_tensor_parallel_degree,
  };
}

/**
 * The model the job trains: [model] resolved for training.seq_len, with what torchtitan's update_from_config
 * copies in from other sections (debug.moe_force_load_balance → moe_args._debug_force_load_balance).
 */
export function modelConfigOf(cfg: JobConfig): ResolvedModelConfig {
  const model = resolveModelConfig(cfg.model, cfg.training.seq_len);
  if (cfg.debug.moe_force_load_balance) model.args.moe_args._debug_force_load_balance = true;
  return model;
}
