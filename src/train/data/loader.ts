// The per-rank data loader: packs documents into (local_batch, S) Int32 token/label batches, torchtitan-style
// (a stateful DataLoader with batch_size = local_batch_size over the packing dataset: B consecutive samples per
// batch), and saves/restores its position.

import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { JobConfig } from '../job-config.ts';
import { ShardedDocuments, unreadable, type DocumentSource } from './documents.ts';
import { Packer } from './packer.ts';
import {
  checkDataState,
  DATA_STATE_FORMAT,
  DataStateError,
  encodeTokens,
  positionOf,
  type DataState,
} from './state.ts';
import { SyntheticSource } from './synthetic.ts';
import { loadTextSource, textProblem, TextSource, type BackgroundEncoder } from './text-source.ts';
import { TokenFileSource } from './token-source.ts';
import { BYTE_VOCAB_SIZE, ByteTokenizer } from './tokenizer.ts';
import { HfTokenizer, inspectTokenizer, TokenizerError, type TextTokenizer } from './hf-tokenizer.ts';
import {
  checkParquetColumn,
  isParquetPath,
  loadParquetTexts,
  parquetName,
  ParquetSourceError,
} from './parquet-source.ts';

/** The bundled text sample (data/README.md: origin and licence); the default of dataset = "text". */
export const BUNDLED_TEXT_SAMPLE = fileURLToPath(new URL('../../../data/sample.txt', import.meta.url));

export interface Batch {
  /** (batchSize, seqLen) row-major: input token ids. */
  tokens: Int32Array;
  /** (batchSize, seqLen) row-major: the next token of each position. */
  labels: Int32Array;
  batchSize: number;
  seqLen: number;
  /** labels.numel(): what torchtitan counts for tps (every position, ignored or not). */
  ntokens: number;
  /** Wall time spent producing this batch (torchtitan's data_loading time). */
  fetchMs: number;
}

export interface DataLoaderOptions {
  batchSize: number;
  seqLen: number;
  dpRank: number;
  dpDegree: number;
  /** Called when this rank's documents run out and reading restarts from document 0. */
  onReloop?: (epoch: number, description: string) => void;
}

export class DataLoader {
  private readonly packer: Packer;
  private readonly chunk: Int32Array;
  private batches = 0;
  private tokens = 0;

  constructor(
    /** This rank's documents (already sharded, or a per-rank generated source). */
    readonly source: DocumentSource,
    readonly opts: DataLoaderOptions,
  ) {
    const { batchSize, seqLen } = opts;
    if (!(Number.isInteger(batchSize) && batchSize >= 1))
      throw new RangeError(`local_batch_size must be a positive integer (got ${batchSize})`);
    this.packer = new Packer(source, seqLen, (epoch) => opts.onReloop?.(epoch, source.description));
    this.chunk = new Int32Array(seqLen + 1);
  }

  get description(): string {
    return this.source.description;
  }

  next(): Batch {
    const t0 = performance.now();
    const { batchSize: B, seqLen: S } = this.opts;
    const tokens = new Int32Array(B * S);
    const labels = new Int32Array(B * S);
    for (let b = 0; b < B; b++) {
      this.packer.nextChunkInto(this.chunk);
      tokens.set(this.chunk.subarray(0, S), b * S);
      labels.set(this.chunk.subarray(1, S + 1), b * S);
    }
    this.batches++;
    this.tokens += B * S;
    return { tokens, labels, batchSize: B, seqLen: S, ntokens: B * S, fetchMs: performance.now() - t0 };
  }

  /**
   * Starts tokenizing, off the training path, the documents that will fill the next `tokensAhead` tokens (a source
   * without a background encoder ignores it). Only the encoding moves: which document comes next, and so the
   * stream and its saved state, is the packer's alone.
   */
  prefetch(tokensAhead: number): void {
    const src = this.source;
    if (!src.prefetch) return;
    const { nextDoc, pendingTokens } = this.packer.ahead;
    const n = src.numDocs;
    const indices: number[] = [];
    let tokens = pendingTokens;
    for (let k = 0; tokens < tokensAhead && k < n; k++) {
      const i = (nextDoc + k) % n;
      indices.push(i);
      tokens += src.estimateTokens?.(i) ?? 256;
    }
    if (indices.length) src.prefetch(indices);
  }

  state(): DataState {
    const p = this.packer.position();
    return {
      format: DATA_STATE_FORMAT,
      fingerprint: this.source.fingerprint,
      dpRank: this.opts.dpRank,
      dpDegree: this.opts.dpDegree,
      seqLen: this.opts.seqLen,
      batchSize: this.opts.batchSize,
      docIndex: p.docIndex,
      epoch: p.epoch,
      buffer: encodeTokens(p.leftover),
      bufferTokens: p.leftover.length,
      batches: this.batches,
      tokens: this.tokens,
    };
  }

  /**
   * Continues from a saved state. The dataset and the data-parallel layout must be the ones it was saved with:
   * a position in one rank's documents means nothing in another split. seq_len and batch size may change (the
   * token stream simply continues).
   */
  loadState(raw: unknown): void {
    const s = checkDataState(raw);
    if (s.fingerprint !== this.source.fingerprint) {
      throw new DataStateError(
        `data state was saved for "${s.fingerprint}" but this run reads "${this.source.fingerprint}"; resume with the same dataset, or start the data from the beginning (drop the data state)`,
      );
    }
    if (s.dpDegree !== this.opts.dpDegree || s.dpRank !== this.opts.dpRank) {
      throw new DataStateError(
        `data state belongs to data-parallel rank ${s.dpRank} of ${s.dpDegree}, this is rank ${this.opts.dpRank} of ${this.opts.dpDegree}; ` +
          'a data position cannot be re-split across a different data-parallel degree — keep dp_replicate·dp_shard unchanged, or start the data from the beginning',
      );
    }
    this.packer.setPosition(positionOf(s));
    this.batches = s.batches;
    this.tokens = s.tokens;
  }
}

export interface CreateDataLoaderOptions {
  /** Rank in the batch mesh (dp_replicate × dp_shard) and its size; EP/TP/CP ranks do not split data. */
  dpRank: number;
  dpDegree: number;
  /** The model's vocabulary size: token ids must be below it. */
  vocabSize: number;
  log?: (msg: string) => void;
}

export interface OpenDataLoaderOptions extends CreateDataLoaderOptions {
  /** Tokenizes documents in the side pool ([model] tokenizer_path): (tokenizer.json, texts) → [BOS] + ids + [EOS]. */
  encodeInPool?: (tokenizerFile: string, texts: string[]) => Promise<Int32Array[]>;
}

/** The tokenizer of text data: [model] tokenizer_path's tokenizer.json, or the byte tokenizer. */
export function textTokenizerOf(cfg: JobConfig, vocabSize: number): TextTokenizer {
  if (cfg.model.tokenizer_path) return HfTokenizer.load(cfg.model.tokenizer_path, vocabSize);
  if (vocabSize < BYTE_VOCAB_SIZE) {
    throw new Error(
      `text data uses the byte tokenizer (ids up to ${BYTE_VOCAB_SIZE - 1}) but the model's vocab_size is ${vocabSize}; set [model.args] vocab_size ≥ ${BYTE_VOCAB_SIZE}`,
    );
  }
  return new ByteTokenizer();
}

function loaderOptions(cfg: JobConfig, o: CreateDataLoaderOptions): DataLoaderOptions {
  return {
    batchSize: cfg.training.local_batch_size,
    seqLen: cfg.training.seq_len,
    dpRank: o.dpRank,
    dpDegree: o.dpDegree,
    // torchtitan warns on every re-loop; a shard much smaller than a batch re-loops many times per step, so only
    // epochs 1, 2, 4, 8, … are reported.
    onReloop: (epoch, d) => {
      if ((epoch & (epoch - 1)) === 0)
        o.log?.(
          `data: ${d} ran out of documents, re-looping (epoch ${epoch}${epoch > 1 ? '; reported at powers of two' : ''})`,
        );
    },
  };
}

/** Builds the loader a job config asks for ([training] dataset, dataset_path, local_batch_size, seq_len; [debug] seed). */
export function createDataLoader(
  cfg: JobConfig,
  o: CreateDataLoaderOptions,
  background: BackgroundEncoder | null = null,
  texts?: { texts: string[]; name: string },
): DataLoader {
  const { dataset } = cfg.training;
  const seqLen = cfg.training.seq_len;
  const opts = loaderOptions(cfg, o);
  if (dataset === 'synthetic') {
    return new DataLoader(
      new SyntheticSource({ seed: cfg.debug.seed, rank: o.dpRank, vocabSize: o.vocabSize, docTokens: seqLen + 1 }),
      opts,
    );
  }
  if (dataset === 'tokens') {
    if (!cfg.training.dataset_path) {
      throw new Error(
        '[training] dataset = "tokens" needs dataset_path: a .u16 or .i32 file of little-endian token ids',
      );
    }
    return new DataLoader(
      new ShardedDocuments(
        new TokenFileSource(cfg.training.dataset_path, { vocabSize: o.vocabSize }),
        o.dpRank,
        o.dpDegree,
      ),
      opts,
    );
  }
  // "text", and torchtitan's "c4_test" (its data.json is not available to us; the bundled sample stands in).
  const tokenizer = textTokenizerOf(cfg, o.vocabSize);
  const bg = tokenizer instanceof HfTokenizer ? background : null;
  if (texts)
    return new DataLoader(
      new ShardedDocuments(new TextSource(texts.texts, texts.name, tokenizer, bg), o.dpRank, o.dpDegree),
      opts,
    );
  let path = cfg.training.dataset_path;
  if (!path) {
    path = BUNDLED_TEXT_SAMPLE;
    if (dataset === 'c4_test')
      o.log?.(`data: c4_test is not bundled; using the text sample ${path} with the same packing`);
  }
  if (isParquetPath(path) || isFolder(path))
    throw new Error(`${path}: parquet data is read asynchronously; build the loader with openDataLoader`);
  const src = loadTextSource(path, undefined, tokenizer, cfg.training.dataset_text_field);
  return new DataLoader(
    new ShardedDocuments(bg ? new TextSource(src.texts, path, tokenizer, bg) : src, o.dpRank, o.dpDegree),
    opts,
  );
}

function isFolder(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

/**
 * createDataLoader for every dataset, parquet included (read asynchronously), with tokenizing in the side pool when
 * the job names a tokenizer.
 */
export async function openDataLoader(cfg: JobConfig, o: OpenDataLoaderOptions): Promise<DataLoader> {
  let background: BackgroundEncoder | null = null;
  if (cfg.model.tokenizer_path && o.encodeInPool) {
    const file = inspectTokenizer(cfg.model.tokenizer_path, o.vocabSize).file;
    const encode = o.encodeInPool;
    background = (texts) => encode(file, texts);
  }
  const path = cfg.training.dataset_path;
  if (cfg.training.dataset === 'text' && path && (isParquetPath(path) || isFolder(path))) {
    const { texts, files } = await loadParquetTexts(path, cfg.training.dataset_text_field);
    return createDataLoader(cfg, o, background, { texts, name: parquetName(path, files) });
  }
  return createDataLoader(cfg, o, background);
}

/**
 * Why the job's dataset file cannot be used, or null — checked by the launcher before any rank starts, so a typo
 * in dataset_path is one error line rather than every rank failing at start-up. (Contents are checked by the
 * sources themselves, on the ranks; see dataInputProblem for parquet columns and tokenizers.)
 */
export function datasetPathProblem(cfg: JobConfig): string | null {
  const { dataset, dataset_path: path } = cfg.training;
  if (dataset === 'synthetic' || !path) return null;
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    return unreadable('dataset', path, e);
  }
  if (st.isDirectory() && dataset === 'text') return null;
  if (!st.isFile())
    return `dataset ${path} is not a file (set [training] dataset_path to a ${dataset === 'tokens' ? '.u16 or .i32' : '.txt, .jsonl or .parquet'} file${dataset === 'tokens' ? '' : ' or a folder of .parquet shards'})`;
  if (dataset !== 'text' || isParquetPath(path)) return null;
  // The start of the file tells a binary file from text; the ranks check the whole file when they read it.
  let head: Buffer;
  try {
    const fd = openSync(path, 'r');
    try {
      head = Buffer.alloc(Math.min(st.size, 1 << 16));
      head = head.subarray(0, readSync(fd, head, 0, head.length, 0));
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    return unreadable('dataset', path, e);
  }
  return textProblem(head, path, head.length < st.size);
}

/**
 * Everything about the job's data the launcher can check before ranks start: the dataset path, a parquet dataset's
 * text column (in every shard), the tokenizer folder (a real tokenizer.json, its vocabulary within the model's).
 */
export async function dataInputProblem(cfg: JobConfig, modelVocabSize: number): Promise<string | null> {
  const p = datasetPathProblem(cfg);
  if (p) return p;
  const { dataset, dataset_path: path } = cfg.training;
  try {
    if (cfg.model.tokenizer_path && dataset !== 'synthetic' && dataset !== 'tokens')
      inspectTokenizer(cfg.model.tokenizer_path, modelVocabSize);
    if (dataset === 'text' && path && (isParquetPath(path) || isFolder(path)))
      await checkParquetColumn(path, cfg.training.dataset_text_field);
  } catch (e) {
    if (e instanceof TokenizerError || e instanceof ParquetSourceError) return e.message;
    throw e;
  }
  return null;
}
