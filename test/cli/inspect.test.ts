// `moe-actors inspect` on the committed hang fixture (rank 2 never joined all_to_all_v #20 on group ep), given as
// the flight folder, the run folder or the files; and clear errors when there is nothing to inspect.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cli, show, TRACE_FIXTURES } from './helpers.ts';

const HANG = join(TRACE_FIXTURES, 'hang');
const tmp = mkdtempSync(join(tmpdir(), 'moe-cli-inspect-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('moe-actors inspect', () => {
  it('names the rank that did not join and the collective the others wait in', async () => {
    const r = await cli(['inspect', join(HANG, 'flight')]);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout).toContain('flight recorder analysis: 4 dump(s), world size 4');
    expect(r.stdout).toContain(
      'where the ranks are: rank 2 is not in a collective, ranks 0,1,3 in all_to_all_v #20 on group ep',
    );
    expect(r.stdout).toMatch(
      /Not all ranks joining collective #20 \(all_to_all_v.*tag "layer 2 forward dispatch"\): missing ranks: \{2\}/,
    );
  });

  it('accepts the run folder and individual files the same way', async () => {
    const files = readdirSync(join(HANG, 'flight')).map((f) => join(HANG, 'flight', f));
    const [a, b] = await Promise.all([cli(['inspect', HANG]), cli(['inspect', ...files])]);
    expect(a.code, show(a)).toBe(0);
    expect(b.code, show(b)).toBe(0);
    expect(a.stdout).toContain('missing ranks: {2}');
    expect(b.stdout).toBe(a.stdout);
  });

  it('clear errors: a folder without dumps, a file that is not a dump, a path that does not exist', async () => {
    writeFileSync(join(tmp, 'flight-rank-0.json'), '{"version": 1, "rank": 0');
    const [empty, bad, none] = await Promise.all([
      cli(['inspect', join(TRACE_FIXTURES, 'ep4')]),
      cli(['inspect', join(tmp, 'flight-rank-0.json')]),
      cli(['inspect', join(tmp, 'missing')]),
    ]);
    expect(empty.code, show(empty)).toBe(1);
    expect(empty.stderr).toContain('no flight-rank-<rank>.json files in this folder');
    expect(bad.code, show(bad)).toBe(1);
    expect(bad.stderr).toContain(`${join(tmp, 'flight-rank-0.json')}: not a flight dump (invalid JSON`);
    expect(none.code, show(none)).toBe(1);
    expect(none.stderr).toContain(`${join(tmp, 'missing')}: no such file or folder`);
  });
});
