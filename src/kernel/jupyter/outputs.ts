// The runtime's outputs in Jupyter's terms: mime bundles as JSON-ready `data` (binary images base64,
// JSON mimes as JSON values, not strings), errors as ename/evalue/traceback. Our live-metrics mime
// gets an HTML chart beside it, so JupyterLab, nbconvert and GitHub show something without our renderer.

import { METRICS_MIME } from '../metrics';
import type { CellError, MimeBundle } from '../protocol';

const isJsonMime = (mime: string) => mime === 'application/json' || mime.endsWith('+json');

export function toJupyterData(bundle: MimeBundle): Record<string, unknown> {
  const data: Record<string, unknown> = {};
  for (const [mime, value] of Object.entries(bundle)) {
    if (value instanceof Uint8Array) data[mime] = Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
    else if (isJsonMime(mime)) data[mime] = parseJson(value);
    else data[mime] = value;
  }
  const metrics = data[METRICS_MIME];
  if (metrics !== undefined && data['text/html'] === undefined) {
    const html = metricsHtml(metrics);
    if (html) data['text/html'] = html;
  }
  return data;
}

export interface ErrorContent {
  ename: string;
  evalue: string;
  traceback: string[];
}

export function toErrorContent(error: CellError): ErrorContent {
  return {
    ename: error.code ? `${error.name} [${error.code}]` : error.name,
    evalue: error.message,
    traceback: error.stack.split('\n'),
  };
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

interface Point { x: number; loss: number; accuracy: number }
interface Series { name: string; points: Point[] }

const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd'];

/** Loss per series as an inline SVG line chart with the title and note: the metrics renderer's fallback. */
export function metricsHtml(payload: unknown): string | undefined {
  if (typeof payload !== 'object' || payload === null) return undefined;
  const p = payload as { title?: unknown; total?: unknown; unit?: unknown; state?: unknown; note?: unknown; series?: unknown };
  if (!Array.isArray(p.series)) return undefined;
  const series = (p.series as Series[]).filter((s) => Array.isArray(s.points) && typeof s.name === 'string');
  const points = series.flatMap((s) => s.points).filter((pt) => Number.isFinite(pt.x) && Number.isFinite(pt.loss));
  const W = 480, H = 200, pad = 30;
  const maxX = Math.max(typeof p.total === 'number' ? p.total : 0, ...points.map((pt) => pt.x), 1);
  const maxY = Math.max(...points.map((pt) => pt.loss), 1e-9);
  const lines = series.map((s, i) => {
    const d = s.points.filter((pt) => Number.isFinite(pt.x) && Number.isFinite(pt.loss))
      .map((pt) => `${(pad + (pt.x / maxX) * (W - 2 * pad)).toFixed(1)},${(H - pad - (pt.loss / maxY) * (H - 2 * pad)).toFixed(1)}`).join(' ');
    const color = COLORS[i % COLORS.length]!;
    return `<polyline fill="none" stroke="${color}" stroke-width="2" points="${d}"/><text x="${W - pad}" y="${pad + 14 * i}" fill="${color}" text-anchor="end" font-size="11">${escape(s.name)} loss</text>`;
  }).join('');
  const last = series.map((s) => {
    const pt = s.points[s.points.length - 1];
    return pt ? `${escape(s.name)}: loss ${pt.loss.toFixed(4)}, accuracy ${(pt.accuracy * 100).toFixed(1)}%` : '';
  }).filter(Boolean).join(' · ');
  return `<div class="grid-metrics"><b>${escape(String(p.title ?? 'metrics'))}</b> <i>${escape(String(p.state ?? ''))}</i>`
    + `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" style="display:block">`
    + `<line x1="${pad}" y1="${H - pad}" x2="${W - pad}" y2="${H - pad}" stroke="#888"/><line x1="${pad}" y1="${pad}" x2="${pad}" y2="${H - pad}" stroke="#888"/>`
    + `<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="11">${escape(String(p.unit ?? 'x'))}</text>${lines}</svg>`
    + `<div>${last}</div>${typeof p.note === 'string' ? `<div>${escape(p.note)}</div>` : ''}</div>`;
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}
