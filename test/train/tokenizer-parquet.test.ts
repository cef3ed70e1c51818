// Hugging Face tokenizers and parquet datasets: the bundled BPE tokenizer.json is what our trainer makes from the
// bundled sample; the npm library's encodings (what training uses) equal Hugging Face's Rust implementation
// (`tokenizers`, its own Node binding) and our trainer's encoder on every document; parquet files and folders of
// shards give the same token stream as the same texts in .jsonl; tokenizing in the side pool (prefetch) changes
// nothing in the stream or its resume; bad inputs are refused before ranks start, naming the file and the fix.
import { afterAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parquetWriteBuffer } from 'hyparquet-writer';
import { BpeEncoder, tokenizerJson, trainBpe } from '../../src/train/data/bpe-train.ts';
import {
  createDataLoader,
  dataInputProblem,
  HfTokenizer,
  inspectTokenizer,
  openDataLoader,
  splitParagraphs,
} from '../../src/train/data/index.ts';
import { loadJobConfig } from '../../src/train/job-config.ts';
import { runTraining } from '../../src/train/trainer.ts';
import { closeSidePool, processPool } from '../../src/train/pool/pool.ts';

const REPO = new URL('../..', import.meta.url).pathname;
const TOKENIZER = join(REPO, 'data', 'tokenizer');
const SAMPLE = join(REPO, 'data', 'sample.txt');
const texts = splitParagraphs(readFileSync(SAMPLE, 'utf8'));
const root = mkdtempSync(join(tmpdir(), 'moe-tok-'));
afterAll(async () => {
  await closeSidePool();
  rmSync(root, { recursive: true, force: true });
});

const EXTRA = [
  'Hello  world\n\n  tabs\tand ünïcödé 日本語 🙂 x',
  "it's   they'll  42 3.14159 — “quotes” ",
  ' leading space',
  'trailing\n',
  '',
];

describe('the bundled BPE tokenizer', () => {
  it('is exactly what our trainer makes from the bundled sample (npm run train:tokenizer)', () => {
    const json = JSON.parse(readFileSync(join(TOKENIZER, 'tokenizer.json'), 'utf8'));
    const again = JSON.parse(JSON.stringify(tokenizerJson(trainBpe(texts, 1022))));
    expect(again).toEqual(json);
    expect(Object.keys(json.model.vocab)).toHaveLength(1022);
  });

  it("encodes every document like Hugging Face's Rust tokenizers and like our trainer's encoder", async () => {
    const json = JSON.parse(readFileSync(join(TOKENIZER, 'tokenizer.json'), 'utf8'));
    const ours = new BpeEncoder(new Map(Object.entries(json.model.vocab as Record<string, number>)), json.model.merges);
    const hf = HfTokenizer.load(TOKENIZER, 2048);
    const rust = createRequire(import.meta.url)('tokenizers').Tokenizer.fromFile(join(TOKENIZER, 'tokenizer.json'));
    let tokens = 0;
    let bytes = 0;
    for (const t of [...texts, ...EXTRA]) {
      const got = [...hf.encode(t)];
      const want = [...((await rust.encode(t, null, { addSpecialTokens: false })).getIds() as number[])];
      expect(got, `npm library vs Rust tokenizers on ${JSON.stringify(t.slice(0, 40))}`).toEqual(want);
      expect(ours.encode(t), `our encoder on ${JSON.stringify(t.slice(0, 40))}`).toEqual(want);
      if (got.length) expect(hf.decode(got)).toBe(t);
      tokens += got.length;
      bytes += Buffer.byteLength(t);
    }
    expect(hf.encode('a b', { bos: true, eos: true })).toEqual(Int32Array.from([1022, ...hf.encode('a b'), 1023]));
    console.info(
      `bundled BPE: ${tokens} tokens for ${bytes} bytes (${(bytes / tokens).toFixed(2)} bytes/token), ${texts.length + EXTRA.length} texts identical across the three encoders`,
    );
  });
});

describe('tokenizer and dataset inputs refused before ranks start', () => {
  const cfgOf = (extra: string[]) => loadJobConfig(null, ['--training.dataset', 'text', ...extra]);

  it('a tokenizer.json of another kind, a missing one, and a vocabulary larger than the model', async () => {
    const notTok = join(root, 'not-tokenizer');
    mkdirSync(notTok, { recursive: true });
    writeFileSync(
      join(notTok, 'tokenizer.json'),
      JSON.stringify({ bos_token: '<s>', eos_token: '</s>', model_max_length: 2048 }),
    );
    expect(() => inspectTokenizer(notTok)).toThrow(
      `${join(notTok, 'tokenizer.json')} is not a Hugging Face tokenizer.json: it has no "model" with a "type" and a "vocab" (top-level keys: bos_token, eos_token, model_max_length)`,
    );
    const wordLevel = join(root, 'wordlevel');
    mkdirSync(wordLevel, { recursive: true });
    writeFileSync(join(wordLevel, 'tokenizer.json'), JSON.stringify({ model: { type: 'WordLevel', vocab: { a: 0 } } }));
    expect(() => inspectTokenizer(wordLevel)).toThrow(
      /model type "WordLevel" is not supported \(supported: BPE, WordPiece, Unigram\)/,
    );
    expect(await dataInputProblem(cfgOf(['--model.tokenizer_path', join(root, 'nowhere')]), 2048)).toMatch(
      /tokenizer_path = .*nowhere: cannot read .*nowhere\/tokenizer\.json \(no such file\); give a folder with a Hugging Face tokenizer\.json/,
    );
    expect(await dataInputProblem(cfgOf(['--model.tokenizer_path', TOKENIZER]), 1000)).toBe(
      `${join(TOKENIZER, 'tokenizer.json')} has 1024 token ids but the model's vocab_size is 1000; set [model.args] vocab_size ≥ 1024 (or use a smaller tokenizer)`,
    );
    expect(await dataInputProblem(cfgOf(['--model.tokenizer_path', TOKENIZER]), 1024)).toBeNull();

    // Through the launcher: refused before a run folder exists or a rank starts.
    const dump = join(root, 'runs');
    await expect(
      runTraining({ quiet: true }, [
        '--job.dump_folder',
        dump,
        '--model.tokenizer_path',
        notTok,
        '--training.steps',
        '1',
      ]),
    ).rejects.toThrow(/is not a Hugging Face tokenizer\.json/);
    await expect(
      runTraining({ quiet: true }, [
        '--job.dump_folder',
        dump,
        '--model.tokenizer_path',
        TOKENIZER,
        '--model.args.vocab_size',
        '512',
        '--training.steps',
        '1',
      ]),
    ).rejects.toThrow(/set \[model\.args\] vocab_size ≥ 1024/);
    expect(existsSync(dump)).toBe(false);
  });
});

describe('parquet datasets', () => {
  const shards = join(root, 'shards');
  const half = Math.ceil(texts.length / 2);
  mkdirSync(join(shards, 'data'), { recursive: true });
  const write = (file: string, columns: { name: string; data: unknown[] }[]) =>
    writeFileSync(file, Buffer.from(parquetWriteBuffer({ columnData: columns as never, rowGroupSize: 20 })));
  // Two shards named as Hugging Face names them, one row group per 20 rows, an id column beside the text.
  write(join(shards, 'data', 'train-00001-of-00002.parquet'), [
    { name: 'id', data: texts.slice(half).map((_, i) => half + i) },
    { name: 'content', data: texts.slice(half) },
  ]);
  write(join(shards, 'data', 'train-00000-of-00002.parquet'), [
    { name: 'id', data: texts.slice(0, half).map((_, i) => i) },
    { name: 'content', data: texts.slice(0, half) },
  ]);
  const jsonl = join(root, 'same.jsonl');
  writeFileSync(jsonl, texts.map((t) => JSON.stringify({ content: t })).join('\n') + '\n');

  const batches = (l: { next(): { tokens: Int32Array; labels: Int32Array } }, n: number) =>
    Array.from({ length: n }, () => l.next()).map((b) => [...b.tokens, ...b.labels]);
  const opts = (dpRank: number) => ({ dpRank, dpDegree: 2, vocabSize: 2048 });
  const cfg = (path: string, extra: string[] = []) =>
    loadJobConfig(null, [
      '--training.dataset',
      'text',
      '--training.dataset_path',
      path,
      '--training.dataset_text_field',
      'content',
      '--training.seq_len',
      '32',
      '--training.local_batch_size',
      '2',
      '--model.tokenizer_path',
      TOKENIZER,
      ...extra,
    ]);

  it('a folder of shards reads like the same texts in .jsonl (shards in name order), per data-parallel rank', async () => {
    for (const r of [0, 1]) {
      const fromParquet = await openDataLoader(cfg(shards), opts(r));
      const fromJsonl = createDataLoader(cfg(jsonl), opts(r));
      expect(fromParquet.description).toMatch(/shards \(2 parquet files\).*BPE, 1024 ids/);
      expect(batches(fromParquet, 12)).toEqual(batches(fromJsonl, 12));
    }
    const one = await openDataLoader(cfg(join(shards, 'data', 'train-00000-of-00002.parquet')), {
      dpRank: 0,
      dpDegree: 1,
      vocabSize: 2048,
    });
    expect(one.next().tokens[0]).toBe(1022);
  });

  it('tokenizing in the side pool (prefetch) gives the same stream, and a resumed loader continues it exactly', async () => {
    const pool = processPool();
    const encodeInPool = (tokenizerFile: string, t: string[]) => pool.run({ kind: 'encode', tokenizerFile, texts: t });
    const plain = await openDataLoader(cfg(shards), opts(1));
    const pre = await openDataLoader(cfg(shards), { ...opts(1), encodeInPool });
    const want = batches(plain, 30);
    const got: number[][] = [];
    // A started pool thread (its start-up is the launcher's business, and overlaps model building in a run).
    await pool.run({ kind: 'warm' });
    pre.prefetch(4 * 2 * 33);
    await new Promise((r) => setTimeout(r, 50));
    for (let i = 0; i < 30; i++) {
      if (i === 17) {
        // Resume from here in a fresh loader (its own prefetching), as a restarted rank would.
        const state = pre.state();
        const again = await openDataLoader(cfg(shards), { ...opts(1), encodeInPool });
        again.loadState(JSON.parse(JSON.stringify(state)));
        expect(batches(again, 13)).toEqual(want.slice(17));
      }
      got.push(...batches(pre, 1));
      pre.prefetch(4 * 2 * 33);
      // Let the pool's results arrive between "steps".
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(got).toEqual(want);
    const stats = (pre.source as unknown as { source: { stats: { prefetched: number; encodedInline: number } } }).source
      .stats;
    console.info(
      `prefetch: ${stats.prefetched} documents came from the pool, ${stats.encodedInline} were encoded inline`,
    );
    expect(stats.prefetched).toBeGreaterThan(stats.encodedInline);
  });

  it('a parquet file without the text column, or with a non-text one, is refused naming the file, its columns and the fix', async () => {
    const bad = join(root, 'bad');
    mkdirSync(bad, { recursive: true });
    write(join(bad, 'a.parquet'), [{ name: 'content', data: ['x y'] }]);
    write(join(bad, 'b.parquet'), [
      { name: 'body', data: ['z'] },
      { name: 'n', data: [1] },
    ]);
    expect(await dataInputProblem(cfg(bad), 2048)).toBe(
      `${join(bad, 'b.parquet')} has no column "content" (columns: body, n); set [training] dataset_text_field to the column that holds the text`,
    );
    expect(await dataInputProblem(cfg(join(bad, 'b.parquet'), ['--training.dataset_text_field', 'n']), 2048)).toMatch(
      /b\.parquet: column "n" holds INT32, not strings; set \[training\] dataset_text_field/,
    );
    const empty = join(root, 'empty');
    mkdirSync(empty, { recursive: true });
    expect(await dataInputProblem(cfg(empty), 2048)).toMatch(/is a folder without \.parquet files/);
    writeFileSync(join(empty, 'junk.parquet'), 'not parquet');
    expect(await dataInputProblem(cfg(empty), 2048)).toMatch(/junk\.parquet is not a readable parquet file/);
    expect(await dataInputProblem(cfg(shards), 2048)).toBeNull();
  });
});
