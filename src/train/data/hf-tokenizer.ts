// A Hugging Face tokenizer from `[model] tokenizer_path` (a folder holding tokenizer.json, as torchtitan's
// hf_assets_path), encoded by @huggingface/tokenizers (Hugging Face's pure-JS implementation of tokenizer.json:
// no native code, no network). BOS/EOS come from tokenizer_config.json's bos_token/eos_token when the folder has
// one, else from the usual added-token names; a tokenizer with neither gets none (as torchtitan's wrapper).
//
// Everything that can be wrong with the folder is found by inspectTokenizer, which the launcher calls before any
// rank starts: a missing file, a JSON that is not a tokenizer.json, a model kind the library cannot run, a
// vocabulary larger than the model's vocab_size.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import type { EncodeOptions } from './tokenizer.ts';

/** What the rest of the data pipeline needs of a tokenizer. */
export interface TextTokenizer {
  encode(text: string, opts?: EncodeOptions): Int32Array;
  readonly vocabSize: number;
  /** Identifies the tokenizer in the data state (resuming with another tokenizer would continue another stream). */
  readonly fingerprint: string;
  readonly name: string;
}

const MODEL_KINDS = ['BPE', 'WordPiece', 'Unigram'];
const BOS_NAMES = ['<|begin_of_text|>', '<s>', '<bos>', '<|startoftext|>', '[CLS]'];
const EOS_NAMES = ['<|end_of_text|>', '</s>', '<eos>', '<|endoftext|>', '[SEP]'];

export class TokenizerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

export interface TokenizerSpec {
  file: string;
  json: Record<string, unknown>;
  config: Record<string, unknown>;
  /** Largest id + 1 over the model's vocabulary and the added tokens. */
  vocabSize: number;
  bosId: number | null;
  eosId: number | null;
  sha256: string;
}

function tokenName(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
    return (v as { content: string }).content;
  return null;
}

/** The moe-actors folder: bundled assets (data/tokenizer) are found from any working directory. */
const PACKAGE_ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** A relative tokenizer_path is looked up in the working directory, then in the moe-actors folder. */
export function resolveTokenizerPath(dir: string): string {
  if (isAbsolute(dir) || existsSync(dir)) return resolve(dir);
  const bundled = join(PACKAGE_ROOT, dir);
  return existsSync(bundled) ? bundled : resolve(dir);
}

/** Reads and checks `<dir>/tokenizer.json`; every refusal names the file and the fix. */
export function inspectTokenizer(dir: string, modelVocabSize?: number): TokenizerSpec {
  const where = `[model] tokenizer_path = ${dir}`;
  const folder = resolveTokenizerPath(dir);
  let file = join(folder, 'tokenizer.json');
  if (existsSync(folder) && statSync(folder).isFile()) {
    if (!folder.endsWith('.json'))
      throw new TokenizerError(
        `${where}: ${folder} is a file; give the folder that holds tokenizer.json (torchtitan's hf_assets_path)`,
      );
    file = folder;
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TokenizerError(
      `${where}: cannot read ${file} (${code === 'ENOENT' ? 'no such file' : (e as Error).message}); give a folder with a Hugging Face tokenizer.json, e.g. data/tokenizer (train one with npm run train:tokenizer)`,
    );
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch (e) {
    throw new TokenizerError(`${file} is not valid JSON (${(e as Error).message}); give a Hugging Face tokenizer.json`);
  }
  const model = json?.model as Record<string, unknown> | undefined;
  if (!model || typeof model !== 'object' || typeof model.type !== 'string' || !model.vocab) {
    const keys = json && typeof json === 'object' ? Object.keys(json).slice(0, 8).join(', ') : typeof json;
    throw new TokenizerError(
      `${file} is not a Hugging Face tokenizer.json: it has no "model" with a "type" and a "vocab" (top-level keys: ${keys || 'none'}). ` +
        'A tokenizer_config.json, a vocab.json or a tiktoken/sentencepiece model is not enough: save the tokenizer with tokenizer.save("tokenizer.json") (or save_pretrained) and point tokenizer_path at that folder',
    );
  }
  if (!MODEL_KINDS.includes(model.type)) {
    throw new TokenizerError(
      `${file}: model type "${model.type}" is not supported (supported: ${MODEL_KINDS.join(', ')}); use a tokenizer of one of those kinds`,
    );
  }
  let maxId = -1;
  const vocab = model.vocab;
  const ids = Array.isArray(vocab) ? vocab.map((_, i) => i) : Object.values(vocab as Record<string, number>);
  for (const id of ids) if (typeof id === 'number' && id > maxId) maxId = id;
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as { id: number; content: string }[]) : [];
  for (const t of added) if (t.id > maxId) maxId = t.id;
  const vocabSize = maxId + 1;
  if (modelVocabSize !== undefined && vocabSize > modelVocabSize) {
    throw new TokenizerError(
      `${file} has ${vocabSize} token ids but the model's vocab_size is ${modelVocabSize}; set [model.args] vocab_size ≥ ${vocabSize} (or use a smaller tokenizer)`,
    );
  }
  const cfgFile = join(file, '..', 'tokenizer_config.json');
  let config: Record<string, unknown> = {};
  if (existsSync(cfgFile)) {
    try {
      config = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new TokenizerError(
        `${cfgFile} is not valid JSON (${(e as Error).message}); fix or remove it (tokenizer.json alone is enough)`,
      );
    }
  }
  const idOf = (name: string | null): number | null => {
    if (name === null) return null;
    const a = added.find((t) => t.content === name);
    if (a) return a.id;
    const v = Array.isArray(vocab) ? null : (vocab as Record<string, number>)[name];
    return typeof v === 'number' ? v : null;
  };
  const pick = (key: string, names: string[]): number | null => {
    const named = tokenName(config[key]);
    if (named !== null) {
      const id = idOf(named);
      if (id === null)
        throw new TokenizerError(`${cfgFile}: ${key} "${named}" is not a token of ${file}; fix ${key} or remove it`);
      return id;
    }
    for (const n of names) {
      const id = idOf(n);
      if (id !== null) return id;
    }
    return null;
  };
  return {
    file,
    json,
    config,
    vocabSize,
    bosId: pick('bos_token', BOS_NAMES),
    eosId: pick('eos_token', EOS_NAMES),
    sha256: createHash('sha256').update(text).digest('hex'),
  };
}

export class HfTokenizer implements TextTokenizer {
  readonly vocabSize: number;
  readonly fingerprint: string;
  readonly name: string;
  private readonly tok: Tokenizer;

  constructor(readonly spec: TokenizerSpec) {
    this.tok = new Tokenizer(spec.json, spec.config);
    this.vocabSize = spec.vocabSize;
    this.fingerprint = `hf-tokenizer:${spec.sha256.slice(0, 16)}`;
    this.name = `${spec.file} (${spec.json.model && (spec.json.model as { type: string }).type}, ${spec.vocabSize} ids)`;
  }

  static load(dir: string, modelVocabSize?: number): HfTokenizer {
    return new HfTokenizer(inspectTokenizer(dir, modelVocabSize));
  }

  encode(text: string, opts: EncodeOptions = {}): Int32Array {
    const ids = this.tok.encode(text, { add_special_tokens: false }).ids;
    const bos = opts.bos && this.spec.bosId !== null;
    const eos = opts.eos && this.spec.eosId !== null;
    const out = new Int32Array(ids.length + (bos ? 1 : 0) + (eos ? 1 : 0));
    let j = 0;
    if (bos) out[j++] = this.spec.bosId!;
    for (const id of ids) out[j++] = id;
    if (eos) out[j++] = this.spec.eosId!;
    return out;
  }

  decode(ids: ArrayLike<number>): string {
    return this.tok.decode(Array.from(ids), { skip_special_tokens: false });
  }
}
