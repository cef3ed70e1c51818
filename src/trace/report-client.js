// report.html's page: one uPlot chart per metric from the inline JSON. window.__report is the test API: which
// series each chart has and, by ink(), how many canvas pixels carry each series' colour (a series that is
// declared but not drawn has none).
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const PALETTE = [
    '#1f77b4',
    '#d62728',
    '#2ca02c',
    '#ff7f0e',
    '#9467bd',
    '#8c564b',
    '#e377c2',
    '#17becf',
    '#bcbd22',
    '#7f7f7f',
  ];
  const plots = [];
  const width = (el) => Math.max(300, Math.floor(el.getBoundingClientRect().width) - 4);
  for (const c of data.charts) {
    const el = document.querySelector('#chart-' + c.id + ' .plot');
    const sparse = c.series.map(
      (s) => s.values.filter((v) => v !== null).length < c.steps.length / 2 || c.steps.length < 3,
    );
    const opts = {
      width: width(el),
      height: 240,
      scales: c.log ? { x: { time: false }, y: { distr: 3 } } : { x: { time: false } },
      // Steps are integers: no 1.5 ticks.
      axes: [
        { label: 'step', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] },
        { label: c.unit, size: 60 },
      ],
      series: [
        { label: 'step' },
        ...c.series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          // Earlier series are drawn first and wider, so one that coincides with a later one (ranks logging the
          // same numbers) still shows as a border around it.
          width: Math.min(5, 1.5 + (c.series.length - 1 - i) * 1.2),
          spanGaps: true,
          points: { show: sparse[i], size: 7, fill: PALETTE[i % PALETTE.length] },
        })),
      ],
    };
    const u = new uPlot(opts, [c.steps, ...c.series.map((s) => s.values)], el);
    plots.push({ chart: c, u });
  }
  window.addEventListener('resize', () => {
    for (const p of plots) p.u.setSize({ width: width(p.u.root.parentElement), height: 240 });
  });
  const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
  window.__report = {
    ready: true,
    run: data.run,
    charts: plots.map((p) => ({
      id: p.chart.id,
      title: p.chart.title,
      points: p.chart.steps.length,
      series: p.chart.series.map((s, i) => ({
        label: s.label,
        color: PALETTE[i % PALETTE.length],
        values: s.values.filter((v) => v !== null).length,
      })),
    })),
    /** Per chart, per series: canvas pixels within a small distance of the series colour. */
    ink() {
      return plots.map((p) => {
        const cv = p.u.ctx.canvas;
        const img = p.u.ctx.getImageData(0, 0, cv.width, cv.height).data;
        const cols = p.chart.series.map((_, i) => rgb(PALETTE[i % PALETTE.length]));
        const counts = cols.map(() => 0);
        for (let k = 0; k < img.length; k += 4) {
          if (img[k + 3] < 200) continue;
          for (let j = 0; j < cols.length; j++) {
            const c = cols[j];
            if (Math.abs(img[k] - c[0]) + Math.abs(img[k + 1] - c[1]) + Math.abs(img[k + 2] - c[2]) < 40) {
              counts[j]++;
              break;
            }
          }
        }
        return { id: p.chart.id, counts };
      });
    },
  };
})();
