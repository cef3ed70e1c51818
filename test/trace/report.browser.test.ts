// report.html of a real run in a real browser: the tiny job (4 inproc ranks, async checkpoints every 2 steps, the
// bundled BPE tokenizer) trains through runTraining, which writes report.html beside timeline.html; Debian's
// Chromium (playwright-core, never a downloaded browser) opens it from disk. The checks go through the page's
// window.__report API and its canvases: every chart the metrics call for exists, and every series has pixels of its
// colour on the canvas (drawn, not just declared); nothing is fetched; the two pages link to each other. A screenshot
// lands in test-artifacts/trace/report.png.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import { launchChromium } from '../fixtures/trace/chromium.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runTraining } from '../../src/train/trainer.ts';
import { buildReportData } from '../../src/trace/report.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ART = join(ROOT, 'test-artifacts', 'trace');
const TINY = join(ROOT, 'test', 'runtime', 'fixtures', 'tiny_ep4.toml');

let ctx: BrowserContext;
let page: Page;
let profile: string;
let runDir: string;
const root = mkdtempSync(join(tmpdir(), 'moe-report-'));
const requests: string[] = [];
const pageErrors: string[] = [];

type Api = {
  ready: boolean;
  charts: { id: string; title: string; points: number; series: { label: string; color: string; values: number }[] }[];
  ink(): { id: string; counts: number[] }[];
};

beforeAll(async () => {
  const out = await runTraining({ config: TINY, transport: 'inproc', quiet: true }, [
    '--job.dump_folder',
    root,
    '--job.run_name',
    'report-run',
    '--training.steps',
    '6',
    '--checkpoint.enable',
    '--checkpoint.interval',
    '2',
    '--checkpoint.async_mode',
    'async',
    '--model.tokenizer_path',
    join(ROOT, 'data', 'tokenizer'),
  ]);
  runDir = out!.runDir;
  expect(out!.report).toBe(join(runDir, 'report.html'));
  mkdirSync(ART, { recursive: true });
  ({ ctx, profile } = await launchChromium('moe-actors-chromium-', { width: 1400, height: 1000 }));
  page = await ctx.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
}, 180_000);

afterAll(async () => {
  await ctx?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
  rmSync(root, { recursive: true, force: true });
});

describe('report.html of a trained run', () => {
  it('draws every metric series of the run on its canvas, offline', async () => {
    await page.goto(pathToFileURL(join(runDir, 'report.html')).href);
    await page.waitForFunction(
      () => (globalThis as unknown as { __report?: { ready: boolean } }).__report?.ready === true,
      null,
      { timeout: 30_000 },
    );
    const api = await page.evaluate(() => {
      const r = (globalThis as unknown as { __report: Api }).__report;
      return { charts: r.charts, ink: r.ink() };
    });
    await page.screenshot({ path: join(ART, 'report.png'), fullPage: true });
    const ids = api.charts.map((c) => c.id);
    expect(ids).toEqual([
      'loss',
      'grad_norm',
      'lr',
      'tps',
      'mfu',
      'memory',
      'memory_ranks',
      'bytes',
      'data_loading',
      'checkpoint',
    ]);
    const data = buildReportData(runDir);
    for (const c of api.charts) {
      const want = data.charts.find((d) => d.id === c.id)!;
      expect(c.points, `${c.id}: steps`).toBe(6);
      expect(c.series.map((s) => s.label)).toEqual(want.series.map((s) => s.label));
      const ink = api.ink.find((i) => i.id === c.id)!.counts;
      c.series.forEach((s, i) => {
        expect(s.values, `${c.id} / ${s.label}: values`).toBeGreaterThan(0);
        expect(ink[i], `${c.id} / ${s.label}: pixels of ${s.color} on the canvas`).toBeGreaterThan(10);
      });
    }
    // Per rank where ranks differ: throughput is measured per rank.
    expect(api.charts.find((c) => c.id === 'tps')!.series.map((s) => s.label)).toEqual([
      'rank 0',
      'rank 1',
      'rank 2',
      'rank 3',
    ]);
    expect(api.charts.find((c) => c.id === 'bytes')!.series.map((s) => s.label)).toContain('ep');
    // Async checkpoints at steps 2, 4 and 6 (checkpoints.jsonl holds the last one too), plotted at their steps.
    const ck = data.charts.find((c) => c.id === 'checkpoint')!;
    expect(ck.steps.filter((_, i) => ck.series[1]!.values[i] !== null)).toEqual([2, 4, 6]);
    expect(pageErrors).toEqual([]);
    expect(requests.filter((u) => !u.startsWith('file:'))).toEqual([]);
    expect(readFileSync(join(runDir, 'report.html'), 'utf8')).toContain('uPlot');
  });

  it('links to the timeline, and the timeline back to the report', async () => {
    await page.click('#to-timeline');
    await page.waitForURL(/timeline\.html$/);
    await page.click('#to-report');
    await page.waitForURL(/report\.html$/);
    await page.waitForFunction(
      () => (globalThis as unknown as { __report?: { ready: boolean } }).__report?.ready === true,
      null,
      { timeout: 30_000 },
    );
  });
});
