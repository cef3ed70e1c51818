// The byte-level tokenizer with the effective behaviour of torchtitan's test tokenizer (tests/assets/tokenizer,
// torchtitan-semantics.md §7.2). That tokenizer is an HF BPE with 2002 entries and no merges behind a ByteLevel pre-tokenizer; the
// only entries the byte-level alphabet can ever hit are the printable ASCII characters, so in practice it is a
// lookup table. We implement the table, not the BPE machinery, and match it exactly:
//   - every byte 0x21–0x7E ('!'…'~') becomes one token whose id is the byte value;
//   - whitespace (space, tab, newline), control bytes, DEL and every non-ASCII byte are dropped silently
//     (multi-byte UTF-8 characters consist only of bytes ≥ 0x80, so they vanish whole);
//   - BOS = 2002 and EOS = 2003 are the ids torchtitan's wrapper gives <|begin_of_text|> / <|end_of_text|>,
//     which the vocab lacks; the vocabulary size is therefore 2004.
// The tokenizer never adds BOS/EOS by itself; the dataset asks for both (encode(text, { bos: true, eos: true })).

export const BOS_ID = 2002;
export const EOS_ID = 2003;
export const BYTE_VOCAB_SIZE = 2004;

const FIRST_PRINTABLE = 0x21;
const LAST_PRINTABLE = 0x7e;

/** Ids 1998–2001 of tokenizer.json: never produced by encode, named when decoded. */
const SPECIAL_NAMES: Readonly<Record<number, string>> = {
  1998: '<|image|>',
  1999: '<|begin_of_image|>',
  2000: '<|end_of_image|>',
  2001: '<|pad|>',
  [BOS_ID]: '<|begin_of_text|>',
  [EOS_ID]: '<|end_of_text|>',
};

export interface EncodeOptions {
  bos?: boolean;
  eos?: boolean;
}

export interface DecodeOptions {
  /** Drop BOS/EOS/pad/image markers instead of writing their names (default false). */
  skipSpecial?: boolean;
}

const utf8 = new TextEncoder();

export class ByteTokenizer {
  readonly bosId = BOS_ID;
  readonly eosId = EOS_ID;
  readonly vocabSize = BYTE_VOCAB_SIZE;
  readonly fingerprint = 'byte';
  readonly name = 'byte tokenizer';

  /** Number of tokens `encode` yields for these bytes, without BOS/EOS. */
  countTokens(text: string | Uint8Array): number {
    const bytes = typeof text === 'string' ? utf8.encode(text) : text;
    let n = 0;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      if (b >= FIRST_PRINTABLE && b <= LAST_PRINTABLE) n++;
    }
    return n;
  }

  encode(text: string | Uint8Array, opts: EncodeOptions = {}): Int32Array {
    const bytes = typeof text === 'string' ? utf8.encode(text) : text;
    const out = new Int32Array(this.countTokens(bytes) + (opts.bos ? 1 : 0) + (opts.eos ? 1 : 0));
    let j = 0;
    if (opts.bos) out[j++] = BOS_ID;
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      if (b >= FIRST_PRINTABLE && b <= LAST_PRINTABLE) out[j++] = b;
    }
    if (opts.eos) out[j++] = EOS_ID;
    return out;
  }

  /**
   * Printable ASCII ids decode to their character, special ids to their names (or nothing with skipSpecial).
   * Ids encode never yields (0x00–0x20, 0x7F–1997) decode to U+FFFD: the real tokenizer maps them to
   * multi-character vocab strings that no text round-trips through, so we do not pretend to reproduce them.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    let s = '';
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (id >= FIRST_PRINTABLE && id <= LAST_PRINTABLE) s += String.fromCharCode(id);
      else if (SPECIAL_NAMES[id] !== undefined) s += opts.skipSpecial ? '' : SPECIAL_NAMES[id];
      else if (!Number.isInteger(id) || id < 0 || id >= BYTE_VOCAB_SIZE) {
        throw new RangeError(
          `ByteTokenizer.decode: id ${id} at position ${i} is outside the vocabulary [0, ${BYTE_VOCAB_SIZE})`,
        );
      } else s += '\uFFFD';
    }
    return s;
  }
}
