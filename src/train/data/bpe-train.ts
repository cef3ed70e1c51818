// Our own byte-level BPE trainer and encoder (GPT-2 style, the kind of tokenizer.json Hugging Face's ByteLevel
// BPE tokenizers are): text is split by GPT-2's pre-tokenizer regex, each piece's UTF-8 bytes are mapped to
// printable characters (bytes_to_unicode), and merges of adjacent symbols are learned greedily by pair frequency.
// scripts/train-tokenizer.ts uses it to make the bundled tokenizer.json from data/sample.txt; the encoder here is
// a second, independent implementation the tests compare the npm library's encodings with.

/** GPT-2's pre-tokenizer pattern (HF ByteLevel with use_regex = true). */
export const GPT2_PATTERN = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

/** GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100 onwards. */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => (out[b] = String.fromCodePoint(cs[i]!)));
  return out;
}

const BYTE_CHAR = bytesToUnicode();
const utf8 = new TextEncoder();

/** Pre-tokenized pieces of `text`, each as its byte-level characters. */
export function byteLevelPieces(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(GPT2_PATTERN)) {
    let s = '';
    for (const b of utf8.encode(m[0])) s += BYTE_CHAR[b];
    out.push(s);
  }
  return out;
}

export interface TrainedBpe {
  /** token → id: the 256 byte characters (sorted by code point, as HF's trainer), then one token per merge. */
  vocab: Map<string, number>;
  merges: [string, string][];
}

/**
 * Learns `vocabSize − 256` merges (fewer when no pair occurs twice). Ties in pair count go to the pair whose
 * joined string sorts first, so training is deterministic.
 */
export function trainBpe(texts: readonly string[], vocabSize: number): TrainedBpe {
  if (!(Number.isInteger(vocabSize) && vocabSize >= 256))
    throw new RangeError(`trainBpe: vocabSize must be an integer ≥ 256 (got ${vocabSize})`);
  const counts = new Map<string, number>();
  for (const t of texts) for (const p of byteLevelPieces(t)) counts.set(p, (counts.get(p) ?? 0) + 1);
  const words = [...counts].map(([w, c]) => ({ syms: [...w], count: c }));
  const vocab = new Map<string, number>();
  [...BYTE_CHAR].sort((a, b) => a.codePointAt(0)! - b.codePointAt(0)!).forEach((c) => vocab.set(c, vocab.size));
  const merges: [string, string][] = [];
  const SEP = '\u0000';
  while (vocab.size < vocabSize) {
    // Recounting every round is O(corpus) per merge: fine for the few tens of KiB this is meant for.
    const pairs = new Map<string, number>();
    for (const w of words) {
      for (let i = 0; i + 1 < w.syms.length; i++) {
        const k = w.syms[i] + SEP + w.syms[i + 1];
        pairs.set(k, (pairs.get(k) ?? 0) + w.count);
      }
    }
    let best: string | null = null;
    let bestCount = 1;
    for (const [k, c] of pairs) {
      if (c > bestCount || (c === bestCount && best !== null && k.replace(SEP, '') < best.replace(SEP, ''))) {
        best = k;
        bestCount = c;
      }
    }
    if (best === null) break;
    const [a, b] = best.split(SEP) as [string, string];
    const joined = a + b;
    merges.push([a, b]);
    if (!vocab.has(joined)) vocab.set(joined, vocab.size);
    for (const w of words) {
      const s = w.syms;
      for (let i = 0; i + 1 < s.length; i++) {
        if (s[i] === a && s[i + 1] === b) s.splice(i, 2, joined);
      }
    }
  }
  return { vocab, merges };
}

/** Encodes with trained merges: per piece, repeatedly apply the lowest-ranked adjacent pair (GPT-2's bpe()). */
export class BpeEncoder {
  private readonly ranks = new Map<string, number>();
  private readonly cache = new Map<string, number[]>();

  constructor(
    private readonly vocab: ReadonlyMap<string, number>,
    merges: readonly (readonly [string, string])[],
  ) {
    merges.forEach(([a, b], i) => this.ranks.set(a + '\u0000' + b, i));
  }

  encode(text: string): number[] {
    const out: number[] = [];
    for (const p of byteLevelPieces(text)) out.push(...this.piece(p));
    return out;
  }

  private piece(p: string): number[] {
    const hit = this.cache.get(p);
    if (hit) return hit;
    const s = [...p];
    for (;;) {
      let bi = -1;
      let br = Infinity;
      for (let i = 0; i + 1 < s.length; i++) {
        const r = this.ranks.get(s[i] + '\u0000' + s[i + 1]);
        if (r !== undefined && r < br) {
          br = r;
          bi = i;
        }
      }
      if (bi < 0) break;
      const a = s[bi]!;
      const b = s[bi + 1]!;
      // Merge every occurrence of this pair, left to right, as GPT-2 does.
      const next: string[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          next.push(a + b);
          i++;
        } else next.push(s[i]!);
      }
      s.splice(0, s.length, ...next);
    }
    const ids = s.map((t) => {
      const id = this.vocab.get(t);
      if (id === undefined) throw new Error(`BpeEncoder: "${t}" is not in the vocabulary`);
      return id;
    });
    this.cache.set(p, ids);
    return ids;
  }
}

export const BOS_TOKEN = '<|begin_of_text|>';
export const EOS_TOKEN = '<|end_of_text|>';

/** A Hugging Face tokenizer.json (ByteLevel pre-tokenizer and decoder, BPE model) with BOS/EOS as added tokens. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  const special = (content: string, id: number) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  });
  const n = bpe.vocab.size;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(BOS_TOKEN, n), special(EOS_TOKEN, n + 1)],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab: Object.fromEntries(bpe.vocab),
      merges: bpe.merges,
    },
  };
}
