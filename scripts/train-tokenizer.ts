// `npm run train:tokenizer [-- --vocab N --out DIR]`: trains the bundled byte-level BPE tokenizer from the bundled
// text sample (data/sample.txt) with our own trainer (src/train/data/bpe-train.ts) and writes a Hugging Face
// tokenizer.json (data/tokenizer/tokenizer.json by default; [model] tokenizer_path = "data/tokenizer"). Nothing is
// downloaded; the output is deterministic, so rerunning it reproduces the committed file byte for byte.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tokenizerJson, trainBpe } from '../src/train/data/bpe-train.ts';
import { splitParagraphs } from '../src/train/data/text-source.ts';

const ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
let vocab = 1022;
let out = join(ROOT, 'data', 'tokenizer');
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === '--vocab') vocab = Number(argv[++i]);
  else if (argv[i] === '--out') out = resolve(argv[++i]!);
  else throw new Error(`train-tokenizer: unknown argument ${argv[i]} (use --vocab N, --out DIR)`);
}
const texts = splitParagraphs(readFileSync(join(ROOT, 'data', 'sample.txt'), 'utf8'));
const t0 = performance.now();
const bpe = trainBpe(texts, vocab);
mkdirSync(out, { recursive: true });
const file = join(out, 'tokenizer.json');
writeFileSync(file, JSON.stringify(tokenizerJson(bpe), null, 1) + '\n');
console.log(
  `${file}: ${bpe.vocab.size} tokens (${bpe.merges.length} merges) + BOS/EOS from ${texts.length} documents in ${(performance.now() - t0).toFixed(0)} ms`,
);
