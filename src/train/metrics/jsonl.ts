// metrics.jsonl: one JSON object per line. Each line goes out in a single append (O_APPEND) so that ranks sharing
// the file — worker threads of one process, or MPI processes on a shared filesystem — never interleave inside a
// line. Non-finite numbers (a NaN loss) are written as null, as JSON requires.

import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export class JsonlWriter {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  append(record: Record<string, unknown>): void {
    appendFileSync(this.path, JSON.stringify(record) + '\n');
  }
}
