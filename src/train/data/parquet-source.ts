// Text documents from parquet: one file or a folder of shards (the layout of Hugging Face datasets such as C4 or
// FineWeb: data/train-00000-of-00042.parquet …), read with hyparquet (pure JS; snappy built in, and the other
// codecs parquet files use through hyparquet-compressors are not needed for the datasets we read). Each row's
// `dataset_text_field` column (default "text") is one document; shards are read in name order, rows in file order,
// so the document index of the packer is stable across runs and resume continues the exact stream.
//
// Like the .txt/.jsonl source, the whole column is held in memory (strings); that is fine for samples and small
// corpora, not for a full C4 (which wants a lazy per-row-group reader).

import { readdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } from 'hyparquet';

export class ParquetSourceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ParquetSourceError';
  }
}

export const isParquetPath = (path: string): boolean => path.toLowerCase().endsWith('.parquet');

/** The parquet files `path` names: itself, or the *.parquet files of the folder (recursively), in name order. */
export function parquetFiles(path: string): string[] {
  const st = statSync(path);
  if (st.isFile()) return [path];
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    )) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (isParquetPath(e.name)) out.push(join(dir, e.name));
    }
  };
  walk(path);
  return out;
}

/** Checks every file's schema for a string column `field`; the error names the file, its columns and the fix. */
export async function checkParquetColumn(path: string, field: string): Promise<string[]> {
  const files = parquetFiles(path);
  if (files.length === 0)
    throw new ParquetSourceError(
      `dataset ${path} is a folder without .parquet files (set [training] dataset_path to a .parquet file or a folder of them)`,
    );
  for (const f of files) {
    let columns: { name: string; type?: string }[];
    try {
      const meta = await parquetMetadataAsync(await asyncBufferFromFile(f));
      columns = parquetSchema(meta).children.map((c) => ({ name: c.element.name, type: c.element.type }));
    } catch (e) {
      throw new ParquetSourceError(
        `${f} is not a readable parquet file (${(e as Error).message}); give parquet files (e.g. a Hugging Face dataset's data/*.parquet)`,
      );
    }
    const col = columns.find((c) => c.name === field);
    if (!col) {
      throw new ParquetSourceError(
        `${f} has no column "${field}" (columns: ${columns.map((c) => c.name).join(', ') || 'none'}); set [training] dataset_text_field to the column that holds the text`,
      );
    }
    if (col.type !== 'BYTE_ARRAY') {
      throw new ParquetSourceError(
        `${f}: column "${field}" holds ${col.type ?? 'nested values'}, not strings; set [training] dataset_text_field to the column that holds the text`,
      );
    }
  }
  return files;
}

/** Every row's text, shards in name order. */
export async function loadParquetTexts(path: string, field: string): Promise<{ texts: string[]; files: string[] }> {
  const files = await checkParquetColumn(path, field);
  const texts: string[] = [];
  for (const f of files) {
    const rows = await parquetReadObjects({ file: await asyncBufferFromFile(f), columns: [field] });
    rows.forEach((r, i) => {
      const t = r[field] as unknown;
      if (t === null || t === undefined) return; // a null text is no document (HF datasets drop nothing; it yields "")
      if (typeof t !== 'string') throw new ParquetSourceError(`${f}: row ${i} of column "${field}" is not a string`);
      texts.push(t);
    });
  }
  if (texts.length === 0) throw new ParquetSourceError(`dataset ${path}: no rows with text in column "${field}"`);
  return { texts, files };
}

export const parquetName = (path: string, files: readonly string[]): string =>
  files.length === 1 ? basename(files[0]!) : `${basename(path)} (${files.length} parquet files)`;
