// The timeline page's script (bundled by src/trace/timeline-client.ts and inlined into timeline.html by
// src/trace/timeline.ts; browser code checked by tsc with the DOM types, no dependencies, no network). Reads the
// columnar data of timeline-data.ts from #timeline-data and draws it on one canvas: rows = rank × actor, slices
// stacked by level, in-flight collectives in thin lanes under them.
// Smooth at 200k slices: per level the slices never overlap and are sorted, so a frame binary-searches the
// visible range, and where slices are narrower than a pixel it paints one pixel (the first slice's colour) and
// jumps by binary search to the next pixel's time — work per frame is bounded by pixels, not by events.
// window.__timeline is a small test API (rows drawn, filter, visible slice count) for browser tests.
/// <reference lib="dom" />
import type { TimelineData, TimelineRow } from '../timeline-data.ts';

type Row = TimelineRow & { y: number; h: number; drawn: number };
type Hit = { kind: 'slice' | 'coll'; i: number; row: Row };
type View = { t0: number; t1: number };
type Query = { rank?: number; actor?: string; state?: string; layer?: number; microbatch?: number; step?: number };

const byId = <E extends HTMLElement = HTMLElement>(id: string): E => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`timeline.html has no #${id}: the page and src/trace/timeline.ts are out of step`);
  return e as E;
};

const T_START = performance.now();
const D: TimelineData = JSON.parse(byId('timeline-data').textContent ?? '');
const COLORS: Record<string, string> = JSON.parse(byId('timeline-colors').textContent ?? '');
const S = D.strings;
const N_SL = D.s.start.length;
const N_CO = D.c.start.length;
const sStart = Float64Array.from(D.s.start);
const sDur = Float64Array.from(D.s.dur);
const sEnd = new Float64Array(N_SL);
for (let i = 0; i < N_SL; i++) sEnd[i] = sStart[i] + sDur[i];
const sLayer = Int32Array.from(D.s.layer);
const sCat = Int32Array.from(D.s.cat);
const cStart = Float64Array.from(D.c.start);
const cEnd = new Float64Array(N_CO);
for (let i = 0; i < N_CO; i++) cEnd[i] = cStart[i] + D.c.dur[i];
const cLayer = Int32Array.from(D.c.layer);
// Prefix sums of slice durations: the time covered by slices [i, j) of one level is sPrefix[j] − sPrefix[i].
const sPrefix = new Float64Array(N_SL + 1);
for (let i = 0; i < N_SL; i++) sPrefix[i + 1] = sPrefix[i] + sDur[i];
const shades = new Map<string, string>();
/** A category colour at one of four opacities by pixel coverage (few distinct styles keep batching effective). */
function shade(hex: string, cover: number): string {
  const a = cover >= 0.75 ? 1 : cover >= 0.4 ? 0.8 : cover >= 0.1 ? 0.55 : 0.3;
  if (a === 1) return hex;
  const k = hex + a;
  let v = shades.get(k);
  if (v === undefined) {
    const n = parseInt(hex.slice(1), 16);
    v = 'rgba(' + (n >> 16) + ',' + ((n >> 8) & 255) + ',' + (n & 255) + ',' + a + ')';
    shades.set(k, v);
  }
  return v;
}
const catColor = D.categories.map((c) => COLORS[c] || '#999');

// ---- layout -------------------------------------------------------------------------------------------
const LABEL_W = 150;
const AXIS_H = 24;
const LEVEL_H = 15;
const LANE_H = 5;
const ROW_PAD = 5;
const failedRanks = new Map<number, string>();
if (D.failed) for (const r of D.failed.ranks) failedRanks.set(r.rank, r.status);
let y = AXIS_H;
const rows: Row[] = D.rows.map((r) => {
  const h = r.levels * LEVEL_H + r.commLanes * (LANE_H + 1) + ROW_PAD * 2;
  const row: Row = { ...r, y, h, drawn: 0 };
  y += h;
  return row;
});
const totalH = y + 4;

const canvas = byId<HTMLCanvasElement>('canvas');
const ctx2d = canvas.getContext('2d', { alpha: false });
if (!ctx2d)
  throw new Error(
    'timeline.html: this browser gives no 2D canvas context; open the page in a current Chromium or Firefox',
  );
const ctx = ctx2d;
const tip = byId('tip');
const layerSel = byId<HTMLSelectElement>('layer');
let width = 800;
let dpr = 1;
let view: View = { t0: -D.durationMs * 0.01, t1: D.durationMs * 1.01 };
let layer: number | null = null; // null = all layers
const stats = {
  rowsDrawn: 0,
  visibleSliceCount: 0,
  drawnRects: 0,
  frames: 0,
  lastFrameMs: 0,
  plotWidth: 0,
  maxRectsPerLevel: 0,
  maxVisiblePerLevel: 0,
};

function resize() {
  dpr = window.devicePixelRatio || 1;
  width = canvas.parentElement?.clientWidth ?? width;
  canvas.style.height = totalH + 'px';
  canvas.width = Math.round(width * dpr);
  canvas.height = Math.round(totalH * dpr);
  schedule();
}

const plotW = () => Math.max(1, width - LABEL_W);
const xOf = (t: number) => LABEL_W + ((t - view.t0) / (view.t1 - view.t0)) * plotW();
const tOf = (x: number) => view.t0 + ((x - LABEL_W) / plotW()) * (view.t1 - view.t0);
const visibleLayer = (l: number) => layer === null || l === -1 || l === layer;

/** First index in [lo, hi) whose value (ends, sorted) is > t. */
function firstEndAfter(ends: Float64Array, lo: number, hi: number, t: number): number {
  while (lo < hi) {
    const m = (lo + hi) >> 1;
    if (ends[m] > t) hi = m;
    else lo = m + 1;
  }
  return lo;
}

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    draw();
  });
}

function niceStep(span: number, px: number): number {
  const target = (span / px) * 90;
  const p = Math.pow(10, Math.floor(Math.log10(target)));
  for (const m of [1, 2, 5, 10]) if (p * m >= target) return p * m;
  return p * 10;
}
/** ms → "12.5 ms" / "340 µs", trailing zeros dropped. */
function fmtMs(v: number): string {
  const trim = (s: string) => (s.includes('.') ? s.replace(/0+$/, '').replace(/\.$/, '') : s);
  const a = Math.abs(v);
  if (a === 0) return '0 ms';
  if (a < 1) return trim((v * 1000).toFixed(a < 0.01 ? 2 : 1)) + ' µs';
  return trim(v.toFixed(a >= 100 ? 0 : 2)) + ' ms';
}

// Run-length batching of one level's rectangles: adjacent pieces of one colour become one fillRect, and the
// fill style is only set when it changes (both dominate frame time when zoomed out).
let pend = { x: 0, w: 0, y: 0, h: 0, color: '' };
let curStyle = '';
function flushPaint() {
  if (pend.w <= 0) return;
  if (curStyle !== pend.color) ctx.fillStyle = curStyle = pend.color;
  ctx.fillRect(pend.x, pend.y, pend.w, pend.h);
  pend.w = 0;
}
function paint(x: number, y: number, w: number, h: number, color: string) {
  if (pend.w > 0 && color === pend.color && y === pend.y && x <= pend.x + pend.w + 0.5) {
    pend.w = Math.max(pend.w, x + w - pend.x);
    return;
  }
  flushPaint();
  pend = { x, w, y, h, color };
}
function style(c: string) {
  flushPaint();
  if (curStyle !== c) ctx.fillStyle = curStyle = c;
}

function draw() {
  const tf0 = performance.now();
  curStyle = '';
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = '#ffffff';
  ctx.fillRect(0, 0, width, totalH);
  const tPerPx = (view.t1 - view.t0) / plotW();
  let visible = 0;
  let rects = 0;
  let rowsDrawn = 0;
  let maxRects = 0;
  let maxVisible = 0;
  ctx.save();
  ctx.beginPath();
  ctx.rect(LABEL_W, 0, plotW(), totalH);
  ctx.clip();
  ctx.font = '11px system-ui, sans-serif';
  ctx.textBaseline = 'middle';
  for (const row of rows) {
    let drawnHere = 0;
    const status = failedRanks.get(row.rank);
    if (status === 'missing') {
      style('rgba(198,40,40,0.07)');
      ctx.fillRect(LABEL_W, row.y, plotW(), row.h);
    }
    for (let lvl = 0; lvl < row.levels; lvl++) {
      const [lo, hi] = row.ranges[lvl]!;
      const yy = row.y + ROW_PAD + lvl * LEVEL_H;
      let i = firstEndAfter(sEnd, lo, hi, view.t0);
      let lastPx = -1;
      const visible0 = visible;
      const rects0 = rects;
      while (i < hi && sStart[i] < view.t1) {
        if (!visibleLayer(sLayer[i])) {
          i++;
          continue;
        }
        visible++;
        const x0 = xOf(sStart[i]);
        const x1 = xOf(sEnd[i]);
        if (x1 - x0 < 1) {
          const px = Math.floor(x0);
          // Level of detail: the slices that lie wholly inside this pixel merge into it; jump to the first
          // one that reaches into the next pixel (ends are sorted too: a level's slices never overlap).
          // The pixel's opacity says how much of it they cover, so sparse tiny states do not read as busy.
          const next = layer === null ? firstEndAfter(sEnd, i + 1, hi, view.t0 + (px + 1 - LABEL_W) * tPerPx) : i + 1;
          if (px > lastPx) {
            const cover = (sPrefix[next] - sPrefix[i]) / tPerPx;
            paint(px, yy, 1, LEVEL_H - 2, shade(catColor[sCat[i]], cover));
            rects++;
            drawnHere++;
            lastPx = px;
          }
          visible += next - i - 1;
          i = next;
          continue;
        }
        const xa = Math.max(x0, LABEL_W - 1);
        const w = Math.min(x1, width + 1) - xa;
        paint(xa, yy, w, LEVEL_H - 2, catColor[sCat[i]]);
        if (D.s.flags[i] & 1) {
          style('rgba(255,255,255,0.55)');
          for (let hx = xa; hx < xa + w; hx += 8) ctx.fillRect(hx, yy, 3, LEVEL_H - 2);
        }
        rects++;
        drawnHere++;
        lastPx = Math.floor(x1);
        if (w > 36) {
          style('#1d2228');
          const label = S[D.s.name[i]] + (sLayer[i] >= 0 ? ' L' + sLayer[i] : '');
          ctx.fillText(label, xa + 3, yy + (LEVEL_H - 2) / 2, w - 6);
        }
        i++;
      }
      flushPaint();
      maxRects = Math.max(maxRects, rects - rects0);
      maxVisible = Math.max(maxVisible, visible - visible0);
    }
    for (let lane = 0; lane < row.commLanes; lane++) {
      const [lo, hi] = row.commRanges[lane]!;
      const yy = row.y + ROW_PAD + row.levels * LEVEL_H + lane * (LANE_H + 1) + 1;
      let i = firstEndAfter(cEnd, lo, hi, view.t0);
      let lastPx = -1;
      for (; i < hi && cStart[i] < view.t1; i++) {
        if (!visibleLayer(cLayer[i])) continue;
        const x0 = xOf(cStart[i]);
        const x1 = Math.max(x0 + 1, xOf(cEnd[i]));
        if (Math.floor(x1) <= lastPx) continue;
        const f = D.c.flags[i];
        paint(x0, yy, x1 - x0, LANE_H, f & 2 ? '#c62828' : f & 1 ? '#ff8f00' : '#37474f');
        rects++;
        drawnHere++;
        lastPx = Math.floor(x1);
      }
      flushPaint();
    }
    row.drawn = drawnHere;
    if (drawnHere > 0) rowsDrawn++;
  }
  ctx.restore();

  // Row labels and separators.
  for (const row of rows) {
    const status = failedRanks.get(row.rank);
    ctx.strokeStyle = '#e6e8eb';
    ctx.beginPath();
    ctx.moveTo(0, row.y + row.h + 0.5);
    ctx.lineTo(width, row.y + row.h + 0.5);
    ctx.stroke();
    ctx.fillStyle =
      status === 'missing' ? '#c62828' : status === 'waiting' || status === 'failed' ? '#b26a00' : '#1d2228';
    ctx.font =
      (row.actor === rows.find((r) => r.rank === row.rank)?.actor ? '600 ' : '') + '12px system-ui, sans-serif';
    const mark = status === 'missing' ? ' ✖ missing' : status === 'waiting' || status === 'failed' ? ' • waiting' : '';
    ctx.fillText('rank ' + row.rank + ' · ' + row.actor + mark, 8, row.y + Math.min(row.h / 2, 14));
  }
  ctx.fillStyle = '#f1f3f5';
  ctx.fillRect(0, 0, width, AXIS_H);
  const step = niceStep(view.t1 - view.t0, plotW());
  ctx.fillStyle = '#6b7580';
  ctx.strokeStyle = '#d5d9de';
  ctx.font = '11px system-ui, sans-serif';
  for (let t = Math.ceil(view.t0 / step) * step; t <= view.t1; t += step) {
    const x = Math.round(xOf(t)) + 0.5;
    if (x < LABEL_W) continue;
    ctx.beginPath();
    ctx.moveTo(x, AXIS_H - 6);
    ctx.lineTo(x, AXIS_H);
    ctx.stroke();
    ctx.fillText(fmtMs(t), x + 3, AXIS_H / 2);
  }
  stats.rowsDrawn = rowsDrawn;
  stats.visibleSliceCount = visible;
  stats.drawnRects = rects;
  stats.plotWidth = plotW();
  stats.maxRectsPerLevel = maxRects;
  stats.maxVisiblePerLevel = maxVisible;
  stats.frames++;
  stats.lastFrameMs = performance.now() - tf0;
  if (!api.ready) {
    api.ready = true;
    api.loadMs = performance.now();
    api.initMs = api.loadMs - T_START;
  }
}

// ---- interaction -------------------------------------------------------------------------------------
function zoomAt(x: number, factor: number) {
  const t = tOf(x);
  const span = Math.max(1e-4, (view.t1 - view.t0) * factor);
  const f = (t - view.t0) / (view.t1 - view.t0);
  view = { t0: t - f * span, t1: t - f * span + span };
  schedule();
}
canvas.addEventListener(
  'wheel',
  (e) => {
    e.preventDefault();
    const r = canvas.getBoundingClientRect();
    zoomAt(Math.max(LABEL_W, e.clientX - r.left), Math.pow(1.0015, e.deltaY));
  },
  { passive: false },
);
let drag: { x: number; view: View } | null = null;
canvas.addEventListener('pointerdown', (e) => {
  drag = { x: e.clientX, view: { ...view } };
  canvas.setPointerCapture(e.pointerId);
  canvas.classList.add('dragging');
  hideTip();
});
canvas.addEventListener('pointerup', (e) => {
  drag = null;
  canvas.releasePointerCapture(e.pointerId);
  canvas.classList.remove('dragging');
});
canvas.addEventListener('pointermove', (e) => {
  if (drag) {
    const dt = ((e.clientX - drag.x) / plotW()) * (drag.view.t1 - drag.view.t0);
    view = { t0: drag.view.t0 - dt, t1: drag.view.t1 - dt };
    schedule();
    return;
  }
  const r = canvas.getBoundingClientRect();
  hover(e.clientX - r.left, e.clientY - r.top, e.clientX, e.clientY);
});
canvas.addEventListener('pointerleave', hideTip);
canvas.addEventListener('dblclick', () => {
  view = { t0: -D.durationMs * 0.01, t1: D.durationMs * 1.01 };
  schedule();
});
layerSel.addEventListener('change', () => setLayer(layerSel.value === 'all' ? null : Number(layerSel.value)));
window.addEventListener('resize', resize);

/** What is under canvas point (x, y): {kind:'slice'|'coll', i, row} or null. */
function hit(x: number, y: number): Hit | null {
  if (x < LABEL_W) return null;
  const row = rows.find((r) => y >= r.y && y < r.y + r.h);
  if (!row) return null;
  const t = tOf(x);
  const slack = 2 * ((view.t1 - view.t0) / plotW()); // two pixels
  const yIn = y - row.y - ROW_PAD;
  const lvl = Math.floor(yIn / LEVEL_H);
  if (lvl >= 0 && lvl < row.levels) {
    const [lo, hi] = row.ranges[lvl]!;
    let near: Hit | null = null;
    for (let i = firstEndAfter(sEnd, lo, hi, t - slack); i < hi && sStart[i] <= t + slack; i++) {
      if (!visibleLayer(sLayer[i])) continue;
      if (sStart[i] <= t && t <= sEnd[i]) return { kind: 'slice', i, row };
      if (near === null) near = { kind: 'slice', i, row };
    }
    return near;
  }
  const lane = Math.floor((yIn - row.levels * LEVEL_H) / (LANE_H + 1));
  if (lane >= 0 && lane < row.commLanes) {
    const [lo, hi] = row.commRanges[lane]!;
    let near: Hit | null = null;
    for (let i = firstEndAfter(cEnd, lo, hi, t - slack); i < hi && cStart[i] <= t + slack; i++) {
      if (!visibleLayer(cLayer[i])) continue;
      if (cStart[i] <= t && t <= cEnd[i]) return { kind: 'coll', i, row };
      if (near === null) near = { kind: 'coll', i, row };
    }
    return near;
  }
  return null;
}

const ESC: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;' };
const esc = (v: unknown) => String(v).replace(/[&<>]/g, (c) => ESC[c]!);
const kv = (k: string, v: unknown) => '<div><span class="k">' + esc(k) + '</span>' + esc(v) + '</div>';
const bytes = (b: number) =>
  b >= 1048576 ? (b / 1048576).toFixed(2) + ' MiB' : b >= 1024 ? (b / 1024).toFixed(1) + ' KiB' : b + ' B';
const opt = (v: number) => (v === -1 ? '–' : v);

function collLines(i: number): string {
  const C = D.c;
  let h = kv('collective', S[C.op[i]] + ' #' + C.seq[i] + ' on ' + S[C.group[i]]);
  h += kv('bytes', 'sent ' + bytes(C.bytesSent[i]) + ', received ' + bytes(C.bytesReceived[i]));
  h += kv('elements', 'in ' + C.inN[i] + ', out ' + C.outN[i] + ' (' + S[C.dtype[i]] + ')');
  if (C.tag[i] >= 0) h += kv('tag', S[C.tag[i]]);
  h += kv(
    'in flight',
    fmtMs(C.dur[i]) + (C.last[i] >= 0 ? ', waited ' + fmtMs(C.waitMs[i]) + ' for rank ' + C.last[i] : ', arrived last'),
  );
  if (C.missing[i] >= 0) h += '<div class="err">never joined by rank(s) ' + esc(S[C.missing[i]]) + '</div>';
  if (C.err[i] >= 0) h += '<div class="err">' + esc(S[C.err[i]]) + '</div>';
  return h;
}

function describe(h: Hit): string {
  const row = h.row;
  if (h.kind === 'slice') {
    const i = h.i;
    let html = '<b>' + esc(S[D.s.name[i]]) + '</b> <span class="k">' + esc(D.categories[sCat[i]]) + '</span>';
    html +=
      kv('rank', row.rank) + kv('actor', row.actor) + kv('machine', S[D.s.machine[i]]) + kv('state', S[D.s.name[i]]);
    html += kv('layer', opt(sLayer[i])) + kv('microbatch', opt(D.s.mb[i])) + kv('step', D.s.step[i]);
    html +=
      kv('start', fmtMs(sStart[i])) + kv('duration', fmtMs(sDur[i]) + (D.s.flags[i] & 1 ? ' (no exit recorded)' : ''));
    // The collective(s) this state issued: same row, overlapping in time.
    for (let lane = 0; lane < row.commLanes; lane++) {
      const [lo, hi] = row.commRanges[lane]!;
      const c = firstEndAfter(cEnd, lo, hi, sStart[i]);
      if (c < hi && cStart[c] < sEnd[i]) {
        html += collLines(c);
        break;
      }
    }
    return html;
  }
  const i = h.i;
  return (
    '<b>' +
    esc(S[D.c.op[i]]) +
    '</b>' +
    kv('rank', row.rank) +
    kv('actor', row.actor) +
    kv('layer', opt(cLayer[i])) +
    kv('start', fmtMs(cStart[i])) +
    collLines(i)
  );
}

let tipHit: Hit | null = null;
function hover(x: number, y: number, cx: number, cy: number) {
  const h = hit(x, y);
  tipHit = h;
  if (!h) return hideTip();
  tip.innerHTML = describe(h);
  tip.hidden = false;
  const w = tip.offsetWidth;
  const hh = tip.offsetHeight;
  tip.style.left = Math.min(cx + 14, window.innerWidth - w - 6) + 'px';
  tip.style.top = (cy + 16 + hh > window.innerHeight ? cy - hh - 10 : cy + 16) + 'px';
}
function hideTip() {
  tip.hidden = true;
  tipHit = null;
}

// ---- summary table -----------------------------------------------------------------------------------
function renderSummary() {
  const key = layer === null ? 'all' : layer;
  const rowsS = D.summary.rows.filter((r) => r.layer === key);
  const used = D.categories.filter((c) => D.summary.rows.some((r) => r.byCategory[c] > 0));
  const f = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
  const p = (v: number | null) => (v === null ? '–' : v.toFixed(0) + '%');
  let h =
    '<thead><tr><th>rank</th>' +
    used.map((c) => '<th><i style="background:' + COLORS[c] + '"></i>' + c + '</th>').join('');
  h +=
    '<th>compute</th><th>comm</th><th>overlap</th><th>idle</th><th>idle %</th><th>collectives</th><th>sent</th></tr></thead><tbody>';
  for (const r of rowsS) {
    const st = failedRanks.get(r.rank);
    h +=
      '<tr data-rank="' + r.rank + '"' + (st === 'missing' ? ' class="missing"' : '') + '><td>rank ' + r.rank + '</td>';
    h += used.map((c) => '<td>' + f(r.byCategory[c]) + '</td>').join('');
    h +=
      '<td>' +
      f(r.computeMs) +
      '</td><td>' +
      f(r.commMs) +
      '</td><td>' +
      p(r.overlapPct) +
      '</td><td>' +
      f(r.idleMs) +
      '</td><td>' +
      p(r.idlePct) +
      '</td>';
    h += '<td>' + r.collectives + '</td><td>' + bytes(r.bytesSent) + '</td></tr>';
  }
  byId('summary-table').innerHTML = h + '</tbody>';
  byId('summary-title').textContent =
    (layer === null ? 'All layers' : 'Layer ' + layer) + ': time per state category per rank (ms)';
}

function setLayer(l: number | null) {
  layer = l;
  layerSel.value = l === null ? 'all' : String(l);
  hideTip();
  renderSummary();
  schedule();
}

for (const l of D.layers) {
  const o = document.createElement('option');
  o.value = String(l);
  o.textContent = 'layer ' + l;
  layerSel.appendChild(o);
}

// ---- test API ----------------------------------------------------------------------------------------
const api = {
  ready: false,
  loadMs: NaN,
  initMs: NaN,
  get rows() {
    return rows.map((r) => ({ rank: r.rank, actor: r.actor, drawn: r.drawn, y: r.y, h: r.h }));
  },
  get rowsDrawn() {
    return stats.rowsDrawn;
  },
  get filter() {
    return { layer };
  },
  get visibleSliceCount() {
    return stats.visibleSliceCount;
  },
  get stats() {
    return { ...stats, slices: N_SL, collectives: N_CO };
  },
  get view() {
    return { ...view };
  },
  get tooltip() {
    return tip.hidden ? null : tip.innerText;
  },
  get hovered() {
    return tipHit ? { kind: tipHit.kind, index: tipHit.i, rank: tipHit.row.rank, actor: tipHit.row.actor } : null;
  },
  setLayer,
  zoom(t0: number, t1: number) {
    view = { t0, t1 };
    schedule();
  },
  /** Redraws now (tests call this instead of waiting for an animation frame). */
  redraw: draw,
  /**
   * Index of the first slice matching `q` ({rank, actor, state, layer, microbatch, step}), and the page
   * coordinates of its middle at the current view, for hover tests.
   */
  find(q: Query) {
    for (const row of rows) {
      if (q.rank !== undefined && row.rank !== q.rank) continue;
      if (q.actor !== undefined && row.actor !== q.actor) continue;
      for (let lvl = 0; lvl < row.levels; lvl++) {
        const [lo, hi] = row.ranges[lvl]!;
        for (let i = lo; i < hi; i++) {
          if (q.state !== undefined && S[D.s.name[i]] !== q.state) continue;
          if (q.layer !== undefined && sLayer[i] !== q.layer) continue;
          if (q.microbatch !== undefined && D.s.mb[i] !== q.microbatch) continue;
          if (q.step !== undefined && D.s.step[i] !== q.step) continue;
          const r = canvas.getBoundingClientRect();
          const x0 = Math.max(LABEL_W, xOf(sStart[i]));
          const x1 = Math.min(width, xOf(sEnd[i]));
          return {
            index: i,
            x: r.left + (x0 + x1) / 2,
            y: r.top + row.y + ROW_PAD + lvl * LEVEL_H + LEVEL_H / 2,
            start: sStart[i],
            end: sEnd[i],
          };
        }
      }
    }
    return null;
  },
  failed: D.failed
    ? {
        missing: D.failed.ranks.filter((r) => r.status === 'missing').map((r) => r.rank),
        waiting: D.failed.ranks.filter((r) => r.status === 'waiting' || r.status === 'failed').map((r) => r.rank),
      }
    : null,
};
(window as unknown as { __timeline: typeof api }).__timeline = api;

renderSummary();
resize();
