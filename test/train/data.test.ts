import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  BOS_ID,
  BUNDLED_TEXT_SAMPLE,
  ByteTokenizer,
  createDataLoader,
  DataLoader,
  EOS_ID,
  loadTextSource,
  Packer,
  shardRange,
  ShardedDocuments,
  splitParagraphs,
  SyntheticSource,
  syntheticEntropy,
  TokenFileSource,
  type DocumentSource,
} from '../../src/train/data/index.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';

const dir = mkdtempSync(join(tmpdir(), 'moe-data-'));
let fileNo = 0;
function file(name: string, content: string | Uint8Array): string {
  const p = join(dir, `${fileNo++}-${name}`);
  writeFileSync(p, content);
  return p;
}

/** An in-memory document source for packing tests. */
function docs(list: number[][]): DocumentSource {
  return {
    description: 'mem',
    fingerprint: `mem:${list.length}`,
    numDocs: list.length,
    doc: (i) => Int32Array.from(list[i]!),
  };
}

describe('byte tokenizer (torchtitan test tokenizer, spec §7.2)', () => {
  const tok = new ByteTokenizer();

  it('encodes the spec example: one id per printable ASCII byte, BOS/EOS on request, the rest dropped', () => {
    const ids = Array.from(tok.encode('The quick brown fox, jumped…', { bos: true, eos: true }));
    expect(ids.slice(0, 9)).toEqual([2002, 84, 104, 101, 113, 117, 105, 99, 107]);
    expect(ids).toEqual([BOS_ID, ...[...'Thequickbrownfox,jumped'].map((c) => c.charCodeAt(0)), EOS_ID]);
    expect(tok.vocabSize).toBe(2004);
  });

  it('keeps exactly 0x21..0x7E and drops whitespace, control bytes, DEL and non-ASCII', () => {
    const all = new Uint8Array(256).map((_, i) => i);
    const ids = Array.from(tok.encode(all));
    expect(ids).toEqual(Array.from({ length: 0x7e - 0x21 + 1 }, (_, i) => 0x21 + i));
    expect(Array.from(tok.encode(' \t\n\r\x0b\x0c\x7f café ü 日本 '))).toEqual([...'caf'].map((c) => c.charCodeAt(0)));
    expect(tok.encode('').length).toBe(0);
    expect(Array.from(tok.encode('', { bos: true, eos: true }))).toEqual([2002, 2003]);
  });

  it('decodes printable ids back, names or skips the special tokens, rejects ids outside the vocabulary', () => {
    const text = 'Hello, world! (x^2 + y_1) ~ {ok}';
    expect(tok.decode(tok.encode(text))).toBe(text.replace(/\s/g, ''));
    expect(tok.decode([2002, 72, 105, 2003])).toBe('<|begin_of_text|>Hi<|end_of_text|>');
    expect(tok.decode([2002, 72, 105, 2003], { skipSpecial: true })).toBe('Hi');
    expect(() => tok.decode([2004])).toThrow(/outside the vocabulary \[0, 2004\)/);
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }), (s) => {
        const ids = tok.encode(s);
        expect(tok.encode(tok.decode(ids))).toEqual(ids);
      }),
    );
  });
});

describe('text and token sources', () => {
  it('.txt: documents are paragraphs separated by blank lines (whitespace-only lines count as blank)', () => {
    expect(splitParagraphs('a b\nc\n\n\n  \t\nd\n\ne\n')).toEqual(['a b\nc', 'd', 'e']);
    const src = loadTextSource(file('t.txt', 'Hi there\n\n  \nYo!\n'));
    expect(src.numDocs).toBe(2);
    expect(Array.from(src.doc(0))).toEqual([BOS_ID, 72, 105, 116, 104, 101, 114, 101, EOS_ID]);
    expect(Array.from(src.doc(1))).toEqual([BOS_ID, 89, 111, 33, EOS_ID]);
  });

  it('.jsonl: the "text" field of each line; errors name the line', () => {
    const src = loadTextSource(file('d.jsonl', '{"text":"ab","url":"x"}\n\n{"text":"c d"}\n'));
    expect(src.numDocs).toBe(2);
    expect(Array.from(src.doc(1))).toEqual([BOS_ID, 99, 100, EOS_ID]);
    expect(() => loadTextSource(file('bad.jsonl', '{"text":"ok"}\n{"txt":"no"}\n'))).toThrow(
      /bad\.jsonl:2: the record has no string field "text"/,
    );
    expect(() => loadTextSource(file('bad2.jsonl', '{"text":"ok"}\n{oops\n'))).toThrow(/bad2\.jsonl:2: invalid JSON/);
    expect(() => loadTextSource(file('x.csv', 'a'))).toThrow(/cannot tell the text format.*\.csv/);
    expect(() => loadTextSource(join(dir, 'missing.txt'))).toThrow(/no such file/);
  });

  it('binary tokens: uint16/int32 little-endian, cut into pieces, ids checked against the vocabulary', () => {
    const ids = Array.from({ length: 10 }, (_, i) => 1000 + 7 * i);
    const u16 = new Uint8Array(20);
    const i32 = new Uint8Array(40);
    ids.forEach((v, i) => {
      new DataView(u16.buffer).setUint16(2 * i, v, true);
      new DataView(i32.buffer).setInt32(4 * i, v, true);
    });
    for (const p of [file('a.u16', u16), file('a.i32', i32)]) {
      const src = new TokenFileSource(p, { pieceTokens: 4, vocabSize: 2048 });
      expect(src.numDocs).toBe(3);
      expect([0, 1, 2].flatMap((i) => Array.from(src.doc(i)))).toEqual(ids);
      expect(src.doc(2).length).toBe(2);
    }
    expect(() => new TokenFileSource(file('b.u16', u16), { vocabSize: 1050 }).doc(0)).toThrow(
      /token 1056 at token offset 8 is outside the model vocabulary \[0, 1050\)/,
    );
    expect(() => new TokenFileSource(file('odd.i32', new Uint8Array(6)))).toThrow(/not a whole number of i32 tokens/);
    expect(() => new TokenFileSource(file('c.bin', u16))).toThrow(/\.u16 .*\.i32/);
    expect(Array.from(new TokenFileSource(file('c.bin', u16), { dtype: 'u16' }).doc(0))).toEqual(ids);
  });
});

describe('sharding across data-parallel ranks (HF split_dataset_by_node, contiguous)', () => {
  it('gives the first n mod w ranks one extra document', () => {
    expect([0, 1, 2, 3].map((r) => shardRange(10, r, 4))).toEqual([
      { start: 0, end: 3 },
      { start: 3, end: 6 },
      { start: 6, end: 8 },
      { start: 8, end: 10 },
    ]);
  });

  it('tiles the dataset with contiguous blocks whose sizes differ by at most one', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 500 }), fc.integer({ min: 1, max: 40 }), (n, w) => {
        let next = 0;
        for (let r = 0; r < w; r++) {
          const { start, end } = shardRange(n, r, w);
          expect(start).toBe(next);
          expect([Math.floor(n / w), Math.ceil(n / w)]).toContain(end - start);
          next = end;
        }
        expect(next).toBe(n);
      }),
    );
  });

  it('refuses a split that leaves a rank without documents', () => {
    expect(() => new ShardedDocuments(docs([[1], [2]]), 2, 3)).toThrow(
      /rank 2 of 3 gets no documents \(the dataset has 2\)/,
    );
  });
});

/** The packing rule written the obvious way: concatenate documents forever, cut S+1 at a time. */
function referenceChunks(list: number[][], S: number, count: number): number[][] {
  const stream: number[] = [];
  const out: number[][] = [];
  let d = 0;
  while (out.length < count) {
    while (stream.length < (out.length + 1) * (S + 1)) stream.push(...list[d++ % list.length]!);
    out.push(stream.slice(out.length * (S + 1), (out.length + 1) * (S + 1)));
  }
  return out;
}

const docLists = fc.array(fc.array(fc.integer({ min: 0, max: 2003 }), { minLength: 1, maxLength: 30 }), {
  minLength: 1,
  maxLength: 8,
});

describe('packing (torchtitan HuggingFaceTextDataset)', () => {
  it('cuts non-overlapping S+1 chunks from the running buffer, across documents and epochs', () => {
    fc.assert(
      fc.property(docLists, fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 25 }), (list, S, count) => {
        const p = new Packer(docs(list), S);
        const got = Array.from({ length: count }, () => Array.from(p.nextChunk()));
        expect(got).toEqual(referenceChunks(list, S, count));
      }),
    );
  });

  it('counts epochs and reports each re-loop', () => {
    const seen: number[] = [];
    const p = new Packer(docs([[1, 2, 3]]), 4, (e) => seen.push(e));
    p.nextChunk(); // needs 5 tokens: docs 0, 0(epoch 1)
    expect(seen).toEqual([1]);
    expect(p.position().epoch).toBe(1);
    expect(Array.from(p.position().leftover)).toEqual([3]);
  });

  it('batches B consecutive samples as (B, S) tokens and labels shifted by one', () => {
    const list = [
      [10, 11, 12, 13, 14, 15, 16],
      [20, 21, 22],
      [30, 31, 32, 33, 34, 35],
    ];
    const loader = new DataLoader(docs(list), { batchSize: 2, seqLen: 3, dpRank: 0, dpDegree: 1 });
    const b = loader.next();
    expect(Array.from(b.tokens)).toEqual([10, 11, 12, 14, 15, 16]);
    expect(Array.from(b.labels)).toEqual([11, 12, 13, 15, 16, 20]);
    expect(b.ntokens).toBe(6);
    const b2 = loader.next();
    expect(Array.from(b2.tokens)).toEqual([21, 22, 30, 32, 33, 34]);
    expect(Array.from(b2.labels)).toEqual([22, 30, 31, 33, 34, 35]);
  });
});

describe('data state', () => {
  it('a loader restored from JSON continues bit-identically', () => {
    fc.assert(
      fc.property(
        docLists,
        fc.integer({ min: 1, max: 20 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 12 }),
        (list, S, B, k) => {
          const opts = { batchSize: B, seqLen: S, dpRank: 0, dpDegree: 1 };
          const a = new DataLoader(docs(list), opts);
          for (let i = 0; i < k; i++) a.next();
          const saved = JSON.parse(JSON.stringify(a.state()));
          const b = new DataLoader(docs(list), opts);
          b.loadState(saved);
          for (let i = 0; i < 5; i++) {
            const x = a.next();
            const y = b.next();
            expect(Array.from(y.tokens)).toEqual(Array.from(x.tokens));
            expect(Array.from(y.labels)).toEqual(Array.from(x.labels));
          }
          expect(b.state()).toEqual(a.state());
        },
      ),
    );
  });

  it('keeps position, epoch, leftover buffer and counters in the state', () => {
    const a = new DataLoader(docs([[1, 2, 3, 4, 5]]), { batchSize: 1, seqLen: 3, dpRank: 0, dpDegree: 1 });
    a.next();
    a.next(); // 8 tokens consumed from 1 2 3 4 5 | 1 2 3 4 5 → leftover [4, 5], next doc 0 of epoch 2
    const s = a.state();
    expect([s.docIndex, s.epoch, s.bufferTokens, s.batches, s.tokens]).toEqual([1, 1, 2, 2, 6]);
  });

  it('refuses a state from another dataset or data-parallel layout, with the fix in the message', () => {
    const opts = { batchSize: 1, seqLen: 2, dpRank: 1, dpDegree: 2 };
    const s = new DataLoader(
      new ShardedDocuments(
        docs([
          [1, 2, 3],
          [4, 5, 6],
        ]),
        1,
        2,
      ),
      opts,
    ).state();
    expect(() =>
      new DataLoader(
        new ShardedDocuments(
          docs([
            [1, 2, 3],
            [4, 5, 6],
          ]),
          0,
          1,
        ),
        { ...opts, dpRank: 0, dpDegree: 1 },
      ).loadState(s),
    ).toThrow(/rank 1 of 2, this is rank 0 of 1.*keep dp_replicate·dp_shard unchanged/);
    expect(() => new DataLoader(docs([[9]]), opts).loadState(s)).toThrow(
      /saved for "mem:2" but this run reads "mem:1"/,
    );
    expect(() => new DataLoader(docs([[9]]), opts).loadState({ ...s, format: 'x' })).toThrow(/unknown format/);
    expect(() =>
      new DataLoader(
        new ShardedDocuments(
          docs([
            [1, 2, 3],
            [4, 5, 6],
          ]),
          1,
          2,
        ),
        opts,
      ).loadState({ ...s, bufferTokens: s.bufferTokens + 1 }),
    ).toThrow(/buffer holds/);
  });
});

describe('synthetic data', () => {
  it('is deterministic per seed and rank, and differs across ranks and seeds', () => {
    const mk = (seed: number, rank: number) => new SyntheticSource({ seed, rank, vocabSize: 2048, docTokens: 65 });
    expect(mk(3, 1).doc(5)).toEqual(mk(3, 1).doc(5));
    expect(mk(3, 1).doc(5)).not.toEqual(mk(3, 2).doc(5));
    expect(mk(3, 1).doc(5)).not.toEqual(mk(4, 1).doc(5));
    expect(mk(3, 1).doc(5)).not.toEqual(mk(3, 1).doc(6));
    const d = mk(3, 0).doc(0);
    expect(d.length).toBe(65);
    expect(Math.min(...d)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...d)).toBeLessThan(2048);
  });

  it('is learnable: a bigram model fit on one rank predicts another rank far better than uniform', () => {
    const V = 256;
    const train = new SyntheticSource({ seed: 7, rank: 0, vocabSize: V, docTokens: 257 });
    const test = new SyntheticSource({ seed: 7, rank: 1, vocabSize: V, docTokens: 257 });
    const counts = new Float64Array(V * V);
    const rows = new Float64Array(V);
    for (let i = 0; i < 800; i++) {
      const d = train.doc(i);
      for (let j = 1; j < d.length; j++) {
        counts[d[j - 1]! * V + d[j]!]!++;
        rows[d[j - 1]!]!++;
      }
    }
    let nll = 0;
    let n = 0;
    for (let i = 0; i < 50; i++) {
      const d = test.doc(i);
      for (let j = 1; j < d.length; j++, n++)
        nll -= Math.log((counts[d[j - 1]! * V + d[j]!]! + 0.1) / (rows[d[j - 1]!]! + 0.1 * V));
    }
    const ce = nll / n;
    expect(ce).toBeLessThan(0.6 * Math.log(V));
    expect(ce).toBeGreaterThan(syntheticEntropy(V) - 0.1);
  });
});

describe('createDataLoader from a job config', () => {
  const cfgFile = file('job.toml', '[training]\ndataset = "text"\nlocal_batch_size = 2\nseq_len = 16\n');

  it('reads the bundled sample by default; the 4 data-parallel ranks read disjoint, contiguous documents', () => {
    const cfg = loadJobConfig(cfgFile);
    const loaders = [0, 1, 2, 3].map((r) => createDataLoader(cfg, { dpRank: r, dpDegree: 4, vocabSize: 2048 }));
    const ranges = loaders.map((l) => (l.source as ShardedDocuments).range);
    const whole = loadTextSource(BUNDLED_TEXT_SAMPLE);
    expect(ranges[0]!.start).toBe(0);
    expect(ranges[3]!.end).toBe(whole.numDocs);
    for (let r = 1; r < 4; r++) expect(ranges[r]!.start).toBe(ranges[r - 1]!.end);
    const b = loaders[2]!.next();
    expect(b.tokens.length).toBe(32);
    // Rank 2's first sample starts at its first document: BOS, then the document's first characters.
    expect(b.tokens[0]).toBe(BOS_ID);
    expect(Array.from(b.tokens.subarray(0, 16))).toEqual(
      Array.from(whole.doc(ranges[2]!.start))
        .concat(Array.from(whole.doc(ranges[2]!.start + 1)))
        .slice(0, 16),
    );
  });

  it('builds synthetic and token loaders, and explains what is missing', () => {
    const syn = createDataLoader(loadJobConfig(cfgFile, ['--training.dataset', 'synthetic', '--debug.seed', '5']), {
      dpRank: 1,
      dpDegree: 2,
      vocabSize: 512,
    });
    expect(syn.next().tokens.every((t) => t >= 0 && t < 512)).toBe(true);
    expect(() =>
      createDataLoader(loadJobConfig(cfgFile, ['--training.dataset', 'tokens']), {
        dpRank: 0,
        dpDegree: 1,
        vocabSize: 512,
      }),
    ).toThrow(/needs dataset_path/);
    expect(() => createDataLoader(loadJobConfig(cfgFile), { dpRank: 0, dpDegree: 1, vocabSize: 1000 })).toThrow(
      /vocab_size is 1000; set \[model.args\] vocab_size ≥ 2004/,
    );
    const logs: string[] = [];
    createDataLoader(loadJobConfig(cfgFile, ['--training.dataset', 'c4_test']), {
      dpRank: 0,
      dpDegree: 1,
      vocabSize: 2048,
      log: (m) => logs.push(m),
    });
    expect(logs[0]).toMatch(/c4_test is not bundled/);
  });
});
