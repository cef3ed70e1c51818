// Text documents from a file, tokenized with the byte tokenizer as torchtitan's text datasets do: each document
// becomes [BOS] + encode(text) + [EOS].
//
// Formats, chosen by extension:
//   .txt          documents are separated by one or more blank lines (lines that are empty or only whitespace),
//                 so a paragraph is a document; the lines of a paragraph are joined with "\n" (which the
//                 tokenizer drops anyway);
//   .jsonl/.json  one JSON object per line with a string field "text" (HF load_dataset("json") semantics, as for
//                 torchtitan's c4_test/data.json); a .json file that starts with "[" is read as an array of them.
// The whole file is read into memory: this source is for samples and small corpora (for big pre-tokenized
// corpora use the binary token source, which reads lazily).

import { readFileSync } from 'node:fs';
import { basename, extname } from 'node:path';
import { unreadable, type DocumentSource } from './documents.ts';
import { ByteTokenizer } from './tokenizer.ts';
import type { TextTokenizer } from './hf-tokenizer.ts';

export type TextFormat = 'txt' | 'jsonl';

export class TextSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TextSourceError';
  }
}

export function textFormatOf(path: string): TextFormat {
  const ext = extname(path).toLowerCase();
  if (ext === '.txt' || ext === '.text' || ext === '.md') return 'txt';
  if (ext === '.jsonl' || ext === '.json' || ext === '.ndjson') return 'jsonl';
  throw new TextSourceError(
    `${path}: cannot tell the text format from the extension "${ext}"; use .txt (documents separated by blank lines) or .jsonl (one {"text": …} per line)`,
  );
}

/** Paragraphs of a .txt file: runs of non-blank lines. */
export function splitParagraphs(text: string): string[] {
  const docs: string[] = [];
  let cur: string[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') {
      if (cur.length) docs.push(cur.join('\n'));
      cur = [];
    } else cur.push(line);
  }
  if (cur.length) docs.push(cur.join('\n'));
  return docs;
}

function textOfRecord(rec: unknown, where: string, field = 'text'): string {
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec))
    throw new TextSourceError(`${where}: expected a JSON object with a "${field}" field`);
  const t = (rec as Record<string, unknown>)[field];
  if (typeof t !== 'string') {
    throw new TextSourceError(
      `${where}: the record has no string field "${field}" (fields: ${Object.keys(rec).join(', ') || 'none'})${field === 'text' ? '' : '; set [training] dataset_text_field'}`,
    );
  }
  return t;
}

export function parseJsonlTexts(content: string, path: string, field = 'text'): string[] {
  const trimmed = content.trimStart();
  if (trimmed.startsWith('[')) {
    let arr: unknown;
    try {
      arr = JSON.parse(content);
    } catch (e) {
      throw new TextSourceError(`${path}: invalid JSON array (${(e as Error).message})`);
    }
    if (!Array.isArray(arr)) throw new TextSourceError(`${path}: expected an array of {"text": …} objects`);
    return arr.map((r, i) => textOfRecord(r, `${path}: element ${i}`, field));
  }
  const docs: string[] = [];
  const lines = content.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.trim() === '') continue;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch (e) {
      throw new TextSourceError(`${path}:${i + 1}: invalid JSON (${(e as Error).message})`);
    }
    docs.push(textOfRecord(rec, `${path}:${i + 1}`, field));
  }
  return docs;
}

/** Encodes texts off the training path (the side pool); resolves with [BOS] + ids + [EOS] per text. */
export type BackgroundEncoder = (texts: string[]) => Promise<Int32Array[]>;

export class TextSource implements DocumentSource {
  readonly numDocs: number;
  readonly description: string;
  readonly fingerprint: string;
  private readonly ready = new Map<number, Int32Array>();
  private readonly inFlight = new Set<number>();
  private failure: Error | null = null;
  /** Documents doc() found encoded / had to encode itself. */
  readonly stats = { prefetched: 0, encodedInline: 0 };
  private charsPerToken = 3;

  constructor(
    readonly texts: readonly string[],
    name: string,
    readonly tokenizer: TextTokenizer = new ByteTokenizer(),
    private readonly background: BackgroundEncoder | null = null,
  ) {
    this.numDocs = texts.length;
    this.description = `${name} (${texts.length} documents, ${tokenizer.name})`;
    let chars = 0;
    for (const t of texts) chars += t.length;
    // The byte tokenizer's fingerprint stays as it was, so checkpoints written before tokenizers existed resume.
    this.fingerprint = `text:${basename(name)}:${texts.length} documents:${chars} chars${tokenizer.fingerprint === 'byte' ? '' : `:${tokenizer.fingerprint}`}`;
  }

  doc(i: number): Int32Array {
    if (this.failure) throw this.failure;
    const t = this.texts[i];
    if (t === undefined) throw new RangeError(`document ${i} is outside [0, ${this.numDocs})`);
    const got = this.ready.get(i);
    if (got) {
      this.ready.delete(i);
      this.stats.prefetched++;
      return got;
    }
    this.stats.encodedInline++;
    return this.tokenizer.encode(t, { bos: true, eos: true });
  }

  estimateTokens(i: number): number {
    return Math.ceil((this.texts[i]?.length ?? 0) / this.charsPerToken) + 2;
  }

  get prefetch(): DocumentSource['prefetch'] {
    if (!this.background) return undefined;
    return (indices) => {
      const want = indices.filter((i) => !this.ready.has(i) && !this.inFlight.has(i) && i >= 0 && i < this.numDocs);
      if (want.length === 0) return;
      for (const i of want) this.inFlight.add(i);
      this.background!(want.map((i) => this.texts[i]!)).then(
        (docs) => {
          let chars = 0;
          let tokens = 0;
          want.forEach((i, k) => {
            this.inFlight.delete(i);
            this.ready.set(i, docs[k]!);
            chars += this.texts[i]!.length;
            tokens += docs[k]!.length;
          });
          if (tokens > 0) this.charsPerToken = Math.max(0.5, chars / tokens);
        },
        (e: Error) => {
          this.failure = new Error(`tokenizing documents in the side pool failed: ${e.message}`);
        },
      );
    };
  }
}

/**
 * Why these bytes are not a text dataset, or null: a NUL byte (a binary file — tokens, an archive) or invalid
 * UTF-8 would otherwise be trained on as text, byte by byte, without a word. `partial`: the bytes are the start
 * of the file (a multi-byte character may be cut at the end).
 */
export function textProblem(bytes: Uint8Array, path: string, partial: boolean): string | null {
  const nul = bytes.indexOf(0);
  if (nul >= 0) {
    return `dataset ${path} is binary (a NUL byte at offset ${nul}), not text; for pre-tokenized data set [training] dataset = "tokens", else give a UTF-8 .txt or .jsonl file`;
  }
  try {
    new TextDecoder('utf-8', { fatal: true }).decode(bytes, { stream: partial });
  } catch {
    return `dataset ${path} is not valid UTF-8 text; convert it (e.g. iconv -f latin1 -t utf-8) or give a UTF-8 .txt or .jsonl file`;
  }
  return null;
}

export function loadTextSource(
  path: string,
  format: TextFormat = textFormatOf(path),
  tokenizer?: TextTokenizer,
  field = 'text',
): TextSource {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new TextSourceError(unreadable('dataset', path, e));
  }
  const problem = textProblem(bytes, path, false);
  if (problem) throw new TextSourceError(problem);
  const content = bytes.toString('utf8');
  const texts = format === 'txt' ? splitParagraphs(content) : parseJsonlTexts(content, path, field);
  if (texts.length === 0)
    throw new TextSourceError(`${path}: no documents found (the file is empty or only whitespace)`);
  return new TextSource(texts, path, tokenizer);
}
