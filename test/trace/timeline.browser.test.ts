// The HTML timeline in a real browser: Debian's Chromium driven by playwright-core (never a downloaded browser),
// one persistent context for every test of this file. Assertions go through the page's window.__timeline test
// API and its DOM, not pixels; screenshots land in test-artifacts/trace/ for people to look at.
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import { CHROMIUM, launchChromium } from '../fixtures/trace/chromium.ts';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModel, type TraceModel } from '../../src/trace/model.ts';
import { loadRun } from '../../src/trace/run-dir.ts';
import { viewRun } from '../../src/trace/view.ts';
import { generateSyntheticRun } from '../fixtures/trace/synthetic.ts';
import { writeSyntheticRun } from '../fixtures/trace/write-run.ts';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const FIX = join(ROOT, 'test', 'fixtures', 'trace');
const ART = join(ROOT, 'test-artifacts', 'trace');

let ctx: BrowserContext;
let page: Page;
let profile: string;
const requests: string[] = [];
const pageErrors: string[] = [];
const models = new Map<string, TraceModel>();

function prepare(name: string, from: string): string {
  const dir = join(ART, 'runs', name);
  rmSync(dir, { recursive: true, force: true });
  cpSync(from, dir, { recursive: true });
  const v = viewRun(dir);
  expect(v.traceErrors).toEqual([]);
  models.set(name, buildModel(loadRun(dir).events));
  return dir;
}

async function open(name: string): Promise<number> {
  const t0 = Date.now();
  await page.goto(pathToFileURL(join(ART, 'runs', name, 'timeline.html')).href);
  await page.waitForFunction(
    () => (globalThis as unknown as { __timeline?: { ready: boolean } }).__timeline?.ready === true,
    null,
    { timeout: 30_000 },
  );
  return Date.now() - t0;
}

/** window.__timeline, typed loosely for page.evaluate. */
type Api = {
  ready: boolean;
  loadMs: number;
  initMs: number;
  rows: { rank: number; actor: string; drawn: number; y: number; h: number }[];
  rowsDrawn: number;
  filter: { layer: number | null };
  visibleSliceCount: number;
  stats: {
    drawnRects: number;
    slices: number;
    collectives: number;
    lastFrameMs: number;
    frames: number;
    plotWidth: number;
    maxRectsPerLevel: number;
    maxVisiblePerLevel: number;
  };
  view: { t0: number; t1: number };
  tooltip: string | null;
  setLayer(l: number | null): void;
  zoom(t0: number, t1: number): void;
  redraw(): void;
  find(q: Record<string, unknown>): { index: number; x: number; y: number; start: number; end: number } | null;
  failed: { missing: number[]; waiting: number[] } | null;
};
/** Runs `fn(window.__timeline, arg)` in the page (no DOM types in this project: the page is reached via globalThis). */
const api = <T, A = undefined>(fn: (a: Api, arg: A) => T, arg?: A): Promise<T> =>
  page.evaluate(
    ([src, a]) =>
      new Function('a', 'arg', `return (${src})(a, arg)`)((globalThis as unknown as { __timeline: Api }).__timeline, a),
    [fn.toString(), arg] as const,
  ) as Promise<T>;
type Q = Record<string, unknown>;

beforeAll(async () => {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `${CHROMIUM} not found: install Debian's chromium (scripts/setup.sh does) — browser tests never download one`,
    );
  mkdirSync(ART, { recursive: true });
  prepare('ep4', join(FIX, 'ep4'));
  prepare('hang', join(FIX, 'hang'));
  ({ ctx, profile } = await launchChromium('moe-actors-chromium-', { width: 1400, height: 900 }));
  page = await ctx.newPage();
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => pageErrors.push(e.message));
});

afterAll(async () => {
  await ctx?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

describe('timeline of the synthetic 4-rank EP run', () => {
  it('draws every rank × actor row', async () => {
    await open('ep4');
    const m = models.get('ep4')!;
    const expected = m.ranks.flatMap((r) => m.actors.get(r)!.map((a) => `${r}/${a}`));
    expect(expected).toHaveLength(20);
    const rows = await api((a) => a.rows);
    expect(rows.map((r) => `${r.rank}/${r.actor}`)).toEqual(expected);
    for (const r of rows) expect(r.drawn, `rank ${r.rank} ${r.actor}`).toBeGreaterThan(0);
    expect(await api((a) => a.rowsDrawn)).toBe(20);
    expect(await api((a) => a.visibleSliceCount)).toBe(m.slices.length);
    await page.screenshot({ path: join(ART, 'ep4.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('filters by layer: other layers’ slices are hidden, the summary follows', async () => {
    const m = models.get('ep4')!;
    await page.selectOption('#layer', '2');
    await api((a) => a.redraw());
    expect(await api((a) => a.filter)).toEqual({ layer: 2 });
    const shown = m.slices.filter((s) => s.layer === 2 || s.layer === null).length;
    expect(shown).toBeLessThan(m.slices.length);
    expect(await api((a) => a.visibleSliceCount)).toBe(shown);
    expect(await page.textContent('#summary-title')).toMatch(/^Layer 2:/);
    expect(await page.locator('#summary-table tbody tr').count()).toBe(4);
    await page.screenshot({ path: join(ART, 'ep4-layer2.png') });
    await page.selectOption('#layer', 'all');
    await api((a) => a.redraw());
    expect(await api((a) => a.visibleSliceCount)).toBe(m.slices.length);
  });

  it('shows a state’s details, with the collective it issued, on hover', async () => {
    const q = { rank: 1, actor: 'expert', state: 'dispatch', layer: 2, microbatch: 0, step: 0 };
    const s0 = await api((a, qq: Q) => a.find(qq), q);
    expect(s0).not.toBeNull();
    // Zoom so the slice is wide, then hover its middle.
    const d = s0!.end - s0!.start;
    await api((a, r: number[]) => a.zoom(r[0]!, r[1]!), [s0!.start - 2 * d, s0!.end + 2 * d]);
    await api((a) => a.redraw());
    const s = (await api((a, qq: Q) => a.find(qq), q))!;
    await page.mouse.move(s.x, s.y);
    await page.waitForFunction(() => (globalThis as unknown as { __timeline: Api }).__timeline.tooltip !== null);
    const tip = (await api((a) => a.tooltip))!;
    for (const want of [
      /rank\s*1\b/,
      /actor\s*expert/,
      /machine\s*moeLayer/,
      /state\s*dispatch/,
      /layer\s*2\b/,
      /microbatch\s*0\b/,
      /step\s*0\b/,
      /start\s*[\d.]+ ms/,
      /duration\s*[\d.]+ (ms|µs)/,
    ])
      expect(tip).toMatch(want);
    expect(tip).toMatch(/collective\s*all_to_all_v #\d+ on ep/);
    expect(tip).toMatch(/bytes\s*sent [\d.]+ MiB/);
    await page.screenshot({ path: join(ART, 'ep4-hover.png') });
  });

  it('zooms with the wheel and pans by dragging', async () => {
    await page.dblclick('#canvas', { position: { x: 700, y: 5 } });
    await api((a) => a.redraw());
    const v0 = await api((a) => a.view);
    const box = (await page.locator('#canvas').boundingBox())!;
    await page.mouse.move(box.x + 700, box.y + 100);
    await page.mouse.wheel(0, -600);
    await page.waitForFunction((span) => {
      const v = (globalThis as unknown as { __timeline: Api }).__timeline.view;
      return v.t1 - v.t0 < span;
    }, v0.t1 - v0.t0);
    const v1 = await api((a) => a.view);
    expect(v1.t1 - v1.t0).toBeLessThan((v0.t1 - v0.t0) * 0.7);
    await page.mouse.down();
    await page.mouse.move(box.x + 400, box.y + 100, { steps: 4 });
    await page.mouse.up();
    const v2 = await api((a) => a.view);
    expect(v2.t1 - v2.t0).toBeCloseTo(v1.t1 - v1.t0, 6);
    expect(v2.t0).toBeGreaterThan(v1.t0); // dragged left: later times come into view
  });
});

describe('timeline of the hang run', () => {
  it('shows the waiting ranks and the missing one, from the flight dumps', async () => {
    await open('hang');
    expect(await api((a) => a.failed)).toEqual({ missing: [2], waiting: [0, 1, 3] });
    const missing = page.locator('#failed li[data-rank="2"]');
    await expect.poll(() => missing.getAttribute('class')).toBe('missing');
    expect(await missing.textContent()).toMatch(
      /never joined all_to_all_v #20 on group ep .*ranks 0,1,3 waited for it/,
    );
    for (const r of [0, 1, 3]) {
      const li = page.locator(`#failed li[data-rank="${r}"]`);
      expect(await li.getAttribute('data-status')).toBe('failed');
      expect(await li.textContent()).toMatch(/in all_to_all_v #20 on group ep .*for 60 ms/);
    }
    // The diagnosis text is comm/inspect's.
    expect(await page.textContent('#failed pre')).toMatch(
      /Not all ranks joining collective #20 .*missing ranks: \{2\}/,
    );
    expect(await page.locator('#summary-table tr.missing td').first().textContent()).toBe('rank 2');
    expect(await api((a) => a.rowsDrawn)).toBe(16);
    await page.screenshot({ path: join(ART, 'hang.png'), fullPage: true });
  });

  it('is self-contained: the pages fetched nothing but themselves', () => {
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.filter((u) => !u.startsWith('file://'))).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});

describe('a 200k-event run', () => {
  it('loads and draws every row, merging sub-pixel slices (load time is reported, not asserted)', async () => {
    const dir = join(ART, 'runs', 'big');
    const run = generateSyntheticRun({ ranks: 4, steps: 12, microbatches: 8, layers: 8, seed: 3 });
    expect(run.events.length).toBeGreaterThanOrEqual(200_000);
    writeSyntheticRun(dir, run);
    const tv = Date.now();
    const v = viewRun(dir, { validate: false });
    const viewMs = Date.now() - tv;
    const wallMs = await open('big');
    const st = await api((a) => ({
      stats: a.stats,
      loadMs: a.loadMs,
      initMs: a.initMs,
      rowsDrawn: a.rowsDrawn,
      visible: a.visibleSliceCount,
      rows: a.rows.length,
    }));
    expect(st.rowsDrawn).toBe(st.rows);
    expect(st.visible).toBe(st.stats.slices);
    // Level of detail: with the whole run in view a level holds far more slices than there are pixel columns,
    // yet no level paints more rectangles than columns.
    expect(st.stats.maxVisiblePerLevel).toBeGreaterThan(2 * st.stats.plotWidth);
    expect(st.stats.maxRectsPerLevel).toBeLessThanOrEqual(st.stats.plotWidth + 1);
    // Frame times after zooming into the middle tenth and back out.
    const frames: number[] = [];
    const full = await api((a) => a.view);
    const mid = (full.t0 + full.t1) / 2;
    for (const f of [0.1, 1]) {
      const half = ((full.t1 - full.t0) * f) / 2;
      await api(
        (a, r: number[]) => {
          a.zoom(r[0]!, r[1]!);
          a.redraw();
        },
        [mid - half, mid + half],
      );
      frames.push(await api((a) => a.stats.lastFrameMs));
    }
    const report = {
      events: run.events.length,
      slices: st.stats.slices,
      collectives: st.stats.collectives,
      viewRunMs: viewMs,
      navigationToReadyMs: Math.round(st.loadMs),
      scriptInitToFirstFrameMs: Math.round(st.initMs),
      gotoToReadyWallMs: wallMs,
      firstFrameRects: st.stats.drawnRects,
      maxVisibleSlicesPerLevel: st.stats.maxVisiblePerLevel,
      maxRectsPerLevel: st.stats.maxRectsPerLevel,
      frameMsZoomedIn: frames[0],
      frameMsFullView: frames[1],
    };
    writeFileSync(join(ART, 'timeline-load-200k.json'), JSON.stringify(report, null, 2) + '\n');
    console.log(`timeline 200k: ${JSON.stringify(report)}`);
    await page.screenshot({ path: join(ART, 'big.png') });
  });
});
