// Notebook renderer for `application/vnd.grid.metrics+json`: loss and accuracy curves of a training
// job or a FedAvg run. The bridge replaces the output while the run goes on; VS Code then calls
// renderOutputItem again for the same element, so each call redraws from the payload alone.
import type { ActivationFunction, OutputItem } from 'vscode-notebook-renderer';
import type { MetricsPayload, MetricsSeries } from '../../src/kernel/metrics';

const SVG = 'http://www.w3.org/2000/svg';
const WIDTH = 360;
const HEIGHT = 180;
const PAD = { left: 48, right: 12, top: 22, bottom: 30 };
/** One colour per series, by name; theme variables so it reads in dark and light themes. */
const COLOURS: Record<string, string> = {
  train: 'var(--vscode-charts-blue, #3794ff)',
  validation: 'var(--vscode-charts-orange, #d18616)',
  test: 'var(--vscode-charts-green, #89d185)',
};
const FALLBACK = ['var(--vscode-charts-purple, #b180d7)', 'var(--vscode-charts-red, #f14c4c)', 'var(--vscode-charts-yellow, #cca700)'];

function el<K extends keyof SVGElementTagNameMap>(name: K, attrs: Record<string, string | number>, text?: string): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function colour(name: string, i: number): string {
  return COLOURS[name] ?? FALLBACK[i % FALLBACK.length]!;
}

function fmt(v: number): string {
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 1 ? v.toFixed(2) : v.toFixed(3);
}

function chart(title: string, series: MetricsSeries[], pick: (p: { loss: number; accuracy: number }) => number, total: number, unit: string, fixed?: [number, number]): SVGSVGElement {
  const svg = el('svg', { width: WIDTH, height: HEIGHT, viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', 'aria-label': title, class: 'grid-metrics-chart' });
  const values = series.flatMap((s) => s.points.map(pick)).filter(Number.isFinite);
  let [lo, hi] = fixed ?? [Math.min(...values, Infinity), Math.max(...values, -Infinity)];
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const xMax = Math.max(total, ...series.flatMap((s) => s.points.map((p) => p.x)), 1);
  const xMin = unit === 'round' ? 1 : 0;
  const w = WIDTH - PAD.left - PAD.right;
  const h = HEIGHT - PAD.top - PAD.bottom;
  const sx = (x: number) => PAD.left + ((x - xMin) / Math.max(1e-9, xMax - xMin)) * w;
  const sy = (y: number) => PAD.top + (1 - (y - lo) / (hi - lo)) * h;
  svg.append(el('text', { x: PAD.left, y: 14, class: 'title' }, title));
  for (const t of [lo, (lo + hi) / 2, hi]) {
    svg.append(el('line', { x1: PAD.left, x2: PAD.left + w, y1: sy(t), y2: sy(t), class: 'grid' }));
    svg.append(el('text', { x: PAD.left - 6, y: sy(t) + 4, class: 'tick', 'text-anchor': 'end' }, fmt(t)));
  }
  svg.append(el('text', { x: PAD.left, y: HEIGHT - 8, class: 'tick' }, String(xMin)));
  svg.append(el('text', { x: PAD.left + w, y: HEIGHT - 8, class: 'tick', 'text-anchor': 'end' }, `${fmt(xMax)} ${unit}${xMax === 1 ? '' : 's'}`));
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(pick(p)));
    if (pts.length === 0) return;
    const c = colour(s.name, i);
    if (pts.length === 1) {
      svg.append(el('circle', { cx: sx(pts[0]!.x), cy: sy(pick(pts[0]!)), r: 3, fill: c }));
      return;
    }
    const d = pts.map((p, j) => `${j === 0 ? 'M' : 'L'}${sx(p.x).toFixed(1)},${sy(pick(p)).toFixed(1)}`).join('');
    svg.append(el('path', { d, fill: 'none', stroke: c, 'stroke-width': 1.75, class: `series series-${s.name}` }));
  });
  return svg;
}

const STYLE = `
.grid-metrics { font-family: var(--vscode-font-family); color: var(--vscode-foreground); }
.grid-metrics .head { margin: 2px 0 6px; font-weight: 600; }
.grid-metrics .charts { display: flex; flex-wrap: wrap; gap: 12px; }
.grid-metrics svg .title { fill: var(--vscode-foreground); font-size: 12px; font-weight: 600; }
.grid-metrics svg .tick { fill: var(--vscode-descriptionForeground); font-size: 10px; }
.grid-metrics svg .grid { stroke: var(--vscode-editorWidget-border, #8884); stroke-width: 0.5; }
.grid-metrics .legend { display: flex; gap: 14px; margin-top: 4px; font-size: 12px; }
.grid-metrics .legend span::before { content: ''; display: inline-block; width: 10px; height: 3px; margin-right: 5px; vertical-align: middle; background: var(--c); }
.grid-metrics .note { margin-top: 4px; font-size: 12px; color: var(--vscode-descriptionForeground); }
`;

export function render(element: HTMLElement, payload: MetricsPayload): void {
  const root = document.createElement('div');
  root.className = 'grid-metrics';
  root.dataset.state = payload.state;
  const style = document.createElement('style');
  style.textContent = STYLE;
  const head = document.createElement('div');
  head.className = 'head';
  head.textContent = `${payload.title} — ${payload.state}`;
  const charts = document.createElement('div');
  charts.className = 'charts';
  charts.append(
    chart('Loss', payload.series, (p) => p.loss, payload.total, payload.unit),
    chart('Accuracy', payload.series, (p) => p.accuracy, payload.total, payload.unit, [0, 1]),
  );
  const legend = document.createElement('div');
  legend.className = 'legend';
  payload.series.forEach((s, i) => {
    const last = s.points.at(-1);
    const item = document.createElement('span');
    item.style.setProperty('--c', colour(s.name, i));
    item.textContent = last ? `${s.name}: loss ${fmt(last.loss)}, accuracy ${(last.accuracy * 100).toFixed(1)}%` : s.name;
    legend.append(item);
  });
  root.append(style, head, charts, legend);
  if (payload.note) {
    const note = document.createElement('div');
    note.className = 'note';
    note.textContent = payload.note;
    root.append(note);
  }
  element.replaceChildren(root);
}

export const activate: ActivationFunction = () => ({
  renderOutputItem(item: OutputItem, element: HTMLElement) {
    let payload: MetricsPayload;
    try {
      payload = item.json() as MetricsPayload;
      if (payload?.version !== 1 || !Array.isArray(payload.series)) throw new Error('not a version 1 metrics payload');
    } catch (err) {
      const pre = document.createElement('pre');
      pre.textContent = `Cannot draw these metrics: ${(err as Error).message}`;
      element.replaceChildren(pre);
      return;
    }
    render(element, payload);
  },
  disposeOutputItem() {
    // Nothing to release: the charts are plain DOM in the element VS Code removes.
  },
});
