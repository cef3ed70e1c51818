import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { collectEdges, eventLabel, toDot, toMermaid } from '../../src/trace/statechart.ts';
import { demoMachine } from './fixtures-machine.ts';

describe('statechart export', () => {
  const mermaid = toMermaid(demoMachine);
  const dot = toDot(demoMachine);

  it('collects every targeted transition, with readable event labels and guards', () => {
    const edges = collectEdges(demoMachine).map(
      (e) => `${e.source.path.join('.')} -> ${e.target.path.join('.')} : ${e.label}`,
    );
    expect(edges).toEqual([
      'idle -> running : GO',
      'running -> stopped : STOP',
      'running -> monitoring : done',
      'running.prepare -> running.work : after 50ms',
      'running.work -> running.check : done(work)',
      'running.work -> failed : error(work)',
      'running.check -> running.done : always [guard]',
      'running.check -> running.done : always',
      'monitoring -> stopped : STOP',
      'monitoring.left.a -> monitoring.left.b : GO',
      'failed -> running : RETRY [canRetry]',
    ]);
    expect(eventLabel('xstate.after.1000.x.y')).toBe('after 1000ms');
  });

  it('writes Mermaid stateDiagram-v2 with nesting, parallel regions, initial and final states', () => {
    const lines = mermaid.split('\n').map((l) => l.trim());
    expect(lines.slice(0, 4)).toEqual(['---', 'title: demo', '---', 'stateDiagram-v2']);
    expect(lines).toContain('[*] --> idle');
    expect(lines).toContain('state running {');
    expect(lines).toContain('[*] --> running__prepare');
    expect(lines).toContain('state "prepare" as running__prepare');
    expect(lines).toContain('running__prepare --> running__work: after 50ms');
    expect(lines).toContain('running__done --> [*]');
    expect(lines).toContain('stopped --> [*]');
    expect(lines).toContain('--'); // parallel regions
    expect(lines).toContain('failed --> running: RETRY [canRetry]');
    // Mermaid cannot cross composite borders: drawn between the composites, labelled with the inner states.
    expect(lines).toContain('running --> failed: error(work) (work → failed)');
    const opens = lines.filter((l) => l.endsWith('{')).length;
    expect(lines.filter((l) => l === '}').length).toBe(opens);
  });

  it('writes Graphviz dot with clusters and exact edges', () => {
    expect(dot).toMatch(/subgraph "cluster_running" \{/);
    expect(dot).toMatch(/subgraph "cluster_monitoring\.left" \{/);
    expect(dot).toContain('"running.work" -> "failed" [label="error(work)"];');
    expect(dot).toContain('"idle" -> "running::init" [label="GO", lhead="cluster_running"];');
    expect(dot).toContain('"stopped" [label="stopped", peripheries=2];');
  });

  // Graphviz is not a project dependency; when it is on the machine, let the real parser judge the output.
  it.skipIf(!existsSync('/usr/bin/dot'))('dot output parses and lays out with Graphviz', () => {
    const svg = execFileSync('/usr/bin/dot', ['-Tsvg'], { input: dot, encoding: 'utf8' });
    expect(svg).toContain('<svg');
    for (const label of ['prepare', 'monitoring (parallel)', 'RETRY [canRetry]']) expect(svg).toContain(label);
  });
});
