/**
 * A latency-vs-load chart for BENCHMARKS.md: an SVG written here (lines and points on a linear x
 * axis and a logarithmic y axis, grid, ticks, legend), rendered to PNG with @resvg/resvg-js
 * (a devDependency; resvg, https://github.com/RazrFalcon/resvg) using the system fonts.
 */

/**
 * @typedef {{name: string, color: string, dash?: string, points: {x: number, y: number}[]}} Series
 * @typedef {{title: string, subtitle?: string, xLabel: string, yLabel: string, series: Series[], width?: number, height?: number}} Chart
 */

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Ticks 1, 2, 5 × 10^k covering [lo, hi]. */
function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push(v);
    }
  }
  return ticks;
}

/** About `n` round ticks from 0 to hi. */
function linearTicks(hi, n = 8) {
  const raw = hi / n;
  const step = [1, 2, 2.5, 5, 10].map((m) => m * 10 ** Math.floor(Math.log10(raw))).find((s) => s >= raw) ?? raw;
  const ticks = [];
  for (let v = 0; v <= hi * 1.0001; v += step) ticks.push(v);
  return ticks;
}

const fmt = (v) => (v >= 1000 ? `${(v / 1000).toLocaleString('en-US')}k` : v >= 1 ? String(v) : String(+v.toPrecision(2)));

/** @param {Chart} c */
export function chartSvg(c) {
  const W = c.width ?? 960;
  const H = c.height ?? 560;
  const m = { left: 80, right: 220, top: 70, bottom: 60 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const all = c.series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.y) && p.y > 0);
  const xMax = Math.max(...all.map((p) => p.x)) * 1.05;
  const yLo = 10 ** Math.floor(Math.log10(Math.min(...all.map((p) => p.y))));
  const yHi = 10 ** Math.ceil(Math.log10(Math.max(...all.map((p) => p.y))));
  const X = (x) => m.left + (x / xMax) * pw;
  const Y = (y) => m.top + ph - ((Math.log10(y) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo))) * ph;
  const out = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${m.left}" y="30" font-size="20" font-weight="bold">${esc(c.title)}</text>`);
  if (c.subtitle) out.push(`<text x="${m.left}" y="52" font-size="13" fill="#555">${esc(c.subtitle)}</text>`);
  for (const t of logTicks(yLo, yHi)) {
    const major = Math.log10(t) % 1 === 0;
    out.push(`<line x1="${m.left}" x2="${m.left + pw}" y1="${Y(t)}" y2="${Y(t)}" stroke="${major ? '#ccc' : '#eee'}"/>`);
    out.push(`<text x="${m.left - 8}" y="${Y(t) + 4}" font-size="12" text-anchor="end">${fmt(t)}</text>`);
  }
  for (const t of linearTicks(xMax)) {
    out.push(`<line x1="${X(t)}" x2="${X(t)}" y1="${m.top}" y2="${m.top + ph}" stroke="#eee"/>`);
    out.push(`<text x="${X(t)}" y="${m.top + ph + 18}" font-size="12" text-anchor="middle">${fmt(t)}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 15}" font-size="14" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(22 ${m.top + ph / 2}) rotate(-90)" font-size="14" text-anchor="middle">${esc(c.yLabel)}</text>`);
  c.series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p.y) && p.y > 0);
    const d = pts.map((p, k) => `${k === 0 ? 'M' : 'L'}${X(p.x).toFixed(1)},${Y(p.y).toFixed(1)}`).join(' ');
    out.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    for (const p of pts) out.push(`<circle cx="${X(p.x).toFixed(1)}" cy="${Y(p.y).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    const ly = m.top + 10 + i * 24;
    const lx = m.left + pw + 20;
    out.push(`<line x1="${lx}" x2="${lx + 30}" y1="${ly}" y2="${ly}" stroke="${s.color}" stroke-width="2.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    out.push(`<text x="${lx + 38}" y="${ly + 4}" font-size="13">${esc(s.name)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

/**
 * The SVG as PNG bytes (@resvg/resvg-js; null with the reason when it is not installed).
 * @param {string} svg
 * @returns {Promise<{png: Buffer | null, error: string | null}>}
 */
export async function svgToPng(svg) {
  let Resvg;
  try {
    ({ Resvg } = await import('@resvg/resvg-js'));
  } catch (err) {
    return { png: null, error: `@resvg/resvg-js is not installed (npm ci installs the devDependencies): ${err instanceof Error ? err.message : String(err)}` };
  }
  const png = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, background: 'white' }).render().asPng();
  return { png: Buffer.from(png), error: null };
}
