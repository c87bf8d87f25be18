// The `application/vnd.grid.metrics+json` payload: written by a bridge while a train/fedavg call runs
// (one display, updated in place: live-metrics.ts), drawn by the notebook renderer (media/renderer) and,
// without it, as the HTML chart of the Jupyter kernel (jupyter/outputs.ts). No imports: the renderer
// bundle imports these types and the text fallback too.

export const METRICS_MIME = 'application/vnd.grid.metrics+json';

export interface MetricsPoint {
  /** Epochs (fractional within an epoch) for a training job, rounds for FedAvg, completed cycles for an FL process. */
  x: number;
  loss: number;
  accuracy: number;
}

export interface MetricsSeries {
  /** e.g. "train", "validation", "test". */
  name: string;
  points: MetricsPoint[];
}

export interface MetricsPayload {
  version: 1;
  title: string;
  /** What x counts. */
  unit: 'epoch' | 'round' | 'cycle';
  /** The last x the run will reach (the axis end while it runs). */
  total: number;
  state: 'running' | 'succeeded' | 'failed' | 'cancelled';
  series: MetricsSeries[];
  /** One line under the chart: throughput, ETA, the stored model. */
  note?: string;
}

/** Points kept per series; older ones are thinned so a long run stays a small output. */
export const MAX_POINTS = 600;

export function addPoint(payload: MetricsPayload, series: string, point: MetricsPoint): void {
  let s = payload.series.find((x) => x.name === series);
  if (!s) {
    s = { name: series, points: [] };
    payload.series.push(s);
  }
  s.points.push(point);
  if (s.points.length > MAX_POINTS) s.points = s.points.filter((_, i) => i % 2 === 1 || i === s!.points.length - 1);
}

/** The text/plain fallback (and what a reader of the .ipynb sees). */
export function metricsText(p: MetricsPayload): string {
  const lines = [`${p.title} (${p.state})`];
  for (const s of p.series) {
    const last = s.points.at(-1);
    if (last) lines.push(`  ${s.name}: ${p.unit} ${round(last.x)}/${p.total} · loss ${last.loss.toFixed(4)} · accuracy ${(last.accuracy * 100).toFixed(1)}%`);
  }
  if (p.note) lines.push(`  ${p.note}`);
  return lines.join('\n');
}

function round(x: number): string {
  return Number.isInteger(x) ? String(x) : x.toFixed(2);
}
