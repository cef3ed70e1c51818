// A map-style dataset of token documents and its split across data-parallel ranks.
//
// Every source (text, binary tokens, synthetic) presents itself as documents addressed by index; a document is
// the exact token run the packer appends to its buffer (text documents already carry [BOS] … [EOS]). Keeping the
// dataset map-style is what makes torchtitan's state — "next document index + leftover buffer" — enough to resume.

export interface DocumentSource {
  /** Short description for logs (path, format, counts). */
  readonly description: string;
  /** What identifies the data across runs (file name, size, format — not the path), checked on resume. */
  readonly fingerprint: string;
  /** Number of documents; Infinity for generated sources (they are never re-looped or split by range). */
  readonly numDocs: number;
  /** Tokens of document `i` (0 ≤ i < numDocs). The caller must not modify the array. */
  doc(i: number): Int32Array;
  /** Sources that tokenize off the training path: start encoding these documents now (doc() will find them). */
  prefetch?(indices: readonly number[]): void;
  /** A cheap guess of document i's token count (for how far to prefetch). */
  estimateTokens?(i: number): number;
}

/** Why a dataset file could not be opened, in the words every source and the launcher use. */
export function unreadable(what: string, path: string, e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  return `cannot read ${what} ${path}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message} (set [training] dataset_path)`;
}

export interface ShardRange {
  start: number;
  end: number;
}

/**
 * The documents rank `rank` of `world` data-parallel ranks reads: HF `split_dataset_by_node` on a map-style
 * dataset, i.e. `Dataset.shard(num_shards=world, index=rank, contiguous=True)`. Each rank gets a contiguous
 * block of ⌊n/world⌋ documents, and the first n mod world ranks get one more:
 *   start = ⌊n/w⌋·r + min(r, n mod w),  end = start + ⌊n/w⌋ + (r < n mod w ? 1 : 0).
 */
export function shardRange(n: number, rank: number, world: number): ShardRange {
  if (!(Number.isInteger(world) && world >= 1))
    throw new RangeError(`shardRange: world must be an integer ≥ 1 (got ${world})`);
  if (!(Number.isInteger(rank) && rank >= 0 && rank < world))
    throw new RangeError(`shardRange: rank must be in [0, ${world}) (got ${rank})`);
  const div = Math.floor(n / world);
  const mod = n % world;
  const start = div * rank + Math.min(rank, mod);
  return { start, end: start + div + (rank < mod ? 1 : 0) };
}

/** The documents of one data-parallel rank, re-indexed from 0. */
export class ShardedDocuments implements DocumentSource {
  readonly numDocs: number;
  readonly description: string;
  readonly fingerprint: string;
  readonly range: ShardRange;

  constructor(
    readonly source: DocumentSource,
    readonly rank: number,
    readonly world: number,
  ) {
    if (!Number.isFinite(source.numDocs)) {
      throw new Error(
        `${source.description}: a generated source is not split by range; give each rank its own seed instead`,
      );
    }
    this.range = shardRange(source.numDocs, rank, world);
    this.numDocs = this.range.end - this.range.start;
    if (this.numDocs === 0) {
      throw new Error(
        `${source.description}: data-parallel rank ${rank} of ${world} gets no documents (the dataset has ${source.numDocs}). ` +
          'Use a larger dataset (for .txt files: more paragraphs separated by blank lines) or fewer data-parallel ranks.',
      );
    }
    this.fingerprint = source.fingerprint;
    this.description = `${source.description} [documents ${this.range.start}..${this.range.end - 1} of rank ${rank}/${world}]`;
  }

  doc(i: number): Int32Array {
    if (!(i >= 0 && i < this.numDocs))
      throw new RangeError(`document ${i} is outside this rank's ${this.numDocs} documents`);
    return this.source.doc(this.range.start + i);
  }

  get prefetch(): DocumentSource['prefetch'] {
    const src = this.source;
    return src.prefetch ? (indices) => src.prefetch!(indices.map((i) => this.range.start + i)) : undefined;
  }

  get estimateTokens(): DocumentSource['estimateTokens'] {
    const src = this.source;
    return src.estimateTokens ? (i) => src.estimateTokens!(this.range.start + i) : undefined;
  }
}
