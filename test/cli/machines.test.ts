// `moe-actors machines` in both formats, and docs/statecharts.md equal to what scripts/gen-statecharts.ts
// generates from the machines today.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { statechartsMarkdown } from '../../src/cli/machines.ts';
import { cli, ROOT, run, show } from './helpers.ts';

describe('moe-actors machines', () => {
  it('mermaid: all six machines, each a complete stateDiagram-v2 with its stages', async () => {
    const r = await cli(['machines', '--format', 'mermaid']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout.match(/^stateDiagram-v2$/gm)).toHaveLength(6);
    for (const t of ['moe-layer', 'fsdp-unit', 'train-step', 'expert', 'router', 'optimizer'])
      expect(r.stdout).toContain(`title: ${t}`);
    expect(r.stdout).toContain('forward__exchangeCounts --> forward__dispatch: done(exchangeCounts)');
    expect(r.stdout).toContain('resharded --> unsharding: UNSHARD');
    const opens = r.stdout.split('\n').filter((l) => l.trim().endsWith('{')).length;
    expect(r.stdout.split('\n').filter((l) => l.trim() === '}').length).toBe(opens);
  });

  it('dot, one machine', async () => {
    const r = await cli(['machines', '--format', 'dot', '--machine', 'fsdp-unit']);
    expect(r.code, show(r)).toBe(0);
    expect(r.stdout.match(/^digraph /gm)).toHaveLength(1);
    expect(r.stdout).toContain('label="fsdp-unit"');
    expect(r.stdout).toContain('"resharded" -> "unsharding" [label="UNSHARD"];');
    expect(r.stdout.trimEnd().endsWith('}')).toBe(true);
  });

  it('unknown machine or format: exit 1 naming the choices', async () => {
    const [a, b] = await Promise.all([
      cli(['machines', '--machine', 'scheduler']),
      cli(['machines', '--format', 'svg']),
    ]);
    expect(a.code, show(a)).toBe(1);
    expect(a.stderr).toContain(
      '--machine scheduler: unknown machine; use one of moe-layer, fsdp-unit, train-step, expert, router, optimizer',
    );
    expect(b.code, show(b)).toBe(1);
    expect(b.stderr).toContain('--format svg: unknown format; use mermaid or dot');
  });

  it('docs/statecharts.md is what scripts/gen-statecharts.ts generates from the machines', async () => {
    const committed = readFileSync(join(ROOT, 'docs', 'statecharts.md'), 'utf8');
    expect(committed).toBe(statechartsMarkdown());
    // Six machines and the actor system.
    expect(committed.match(/^```mermaid$/gm)).toHaveLength(7);
    const check = await run(process.execPath, [
      '--import',
      'tsx',
      join(ROOT, 'scripts', 'gen-statecharts.ts'),
      '--check',
    ]);
    expect(check.code, show(check)).toBe(0);
  });
});
