// Tensors as people read them: a `float32 [2, 3]` header over numpy-style nested rows (text/plain) or
// a table (text/html). Big tensors are summarised like numpy: past 1000 elements each axis shows its
// first and last 3 entries around an ellipsis, so a 1M-element tensor prints in a few lines.

import { DTYPES, elementCount, validateTensor, type DType, type Tensor } from '../core/protocol/tensor';
import { halfToFloat } from '../compute/tensor-io';

export const SUMMARY_THRESHOLD = 1000;
export const EDGE_ITEMS = 3;
const LINE_WIDTH = 75;
const HTML_MAX = 20;

type Scalar = number | bigint | boolean | string;

/** The tensor inside `value`, if it is one: our {dtype, dims, data} or onnxruntime's {type, dims, data}. */
export function asTensor(value: unknown): Tensor | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const v = value as { dtype?: unknown; type?: unknown; dims?: unknown; data?: unknown };
  const dtype = typeof v.dtype === 'string' ? v.dtype : v.type;
  if (typeof dtype !== 'string' || !(DTYPES as readonly string[]).includes(dtype) || !Array.isArray(v.dims)) return undefined;
  const t = { dtype: dtype as DType, dims: v.dims as number[], data: v.data } as Tensor;
  try {
    validateTensor(t);
    return t;
  } catch {
    return undefined;
  }
}

export function tensorHeader(t: Tensor): string {
  return `${t.dtype} [${t.dims.join(', ')}]`;
}

/** Element `i` as a JS value (float16 bits decoded, bool as boolean). */
export function elementAt(t: Tensor, i: number): Scalar {
  const raw = (t.data as ArrayLike<Scalar>)[i]!;
  if (t.dtype === 'float16') return halfToFloat(raw as number);
  if (t.dtype === 'bool') return raw !== 0;
  return raw;
}

/** Indices shown along an axis of `size`; -1 stands for the ellipsis. */
function shownIndices(size: number, summarise: boolean, edge: number): number[] {
  if (!summarise || size <= 2 * edge) return Array.from({ length: size }, (_, i) => i);
  return [...Array.from({ length: edge }, (_, i) => i), -1, ...Array.from({ length: edge }, (_, i) => size - edge + i)];
}

function strides(dims: readonly number[]): number[] {
  const s = new Array<number>(dims.length);
  let acc = 1;
  for (let i = dims.length - 1; i >= 0; i--) { s[i] = acc; acc *= dims[i]!; }
  return s;
}

/** One formatter for a set of values, so a column of numbers shares decimals and notation. */
export function makeFormatter(dtype: DType, values: Scalar[]): (v: Scalar) => string {
  if (dtype === 'string') return (v) => { const s = JSON.stringify(v); return s.length > 40 ? `${s.slice(0, 38)}…"` : s; };
  if (dtype === 'bool' || dtype.startsWith('int') || dtype.startsWith('uint')) return (v) => String(v);
  const finite = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  let maxAbs = 0;
  let minAbs = Infinity;
  let decimals = 0;
  for (const v of finite) {
    const a = Math.abs(v);
    if (a > maxAbs) maxAbs = a;
    if (a > 0 && a < minAbs) minAbs = a;
    const fixed = v.toFixed(4);
    const trimmed = fixed.replace(/0+$/, '');
    decimals = Math.max(decimals, trimmed.length - trimmed.indexOf('.') - 1);
  }
  const scientific = maxAbs >= 1e8 || minAbs < 1e-4;
  return (v) => {
    const n = v as number;
    if (!Number.isFinite(n)) return String(n);
    return scientific ? n.toExponential(4) : n.toFixed(decimals);
  };
}

export function formatTensorText(t: Tensor): string {
  const rank = t.dims.length;
  const n = elementCount(t.dims);
  const summarise = n > SUMMARY_THRESHOLD;
  const st = strides(t.dims);
  const shown: number[][] = t.dims.map((d) => shownIndices(d, summarise, EDGE_ITEMS));
  if (rank === 0) return `${tensorHeader(t)}\n${makeFormatter(t.dtype, [elementAt(t, 0)])(elementAt(t, 0))}`;

  const values: Scalar[] = [];
  const collect = (axis: number, offset: number) => {
    for (const i of shown[axis]!) {
      if (i < 0) continue;
      if (axis === rank - 1) values.push(elementAt(t, offset + i));
      else collect(axis + 1, offset + i * st[axis]!);
    }
  };
  collect(0, 0);
  const format = makeFormatter(t.dtype, values);
  const width = values.reduce<number>((w, v) => Math.max(w, format(v).length), 0);
  const cell = (i: number) => format(elementAt(t, i)).padStart(width);

  const render = (axis: number, offset: number): string => {
    const indent = ' '.repeat(axis + 1);
    if (axis === rank - 1) {
      const items = shown[axis]!.map((i) => (i < 0 ? '...'.padStart(width) : cell(offset + i)));
      const lines: string[] = [];
      let line = '';
      for (const item of items) {
        const piece = line ? `${line}, ${item}` : item;
        if (line && indent.length + piece.length + 1 > LINE_WIDTH) { lines.push(`${line},`); line = item; } else line = piece;
      }
      lines.push(line);
      return `[${lines.join(`\n${indent}`)}]`;
    }
    const parts = shown[axis]!.map((i) => (i < 0 ? '...' : render(axis + 1, offset + i * st[axis]!)));
    return `[${parts.join(`,${'\n'.repeat(rank - axis - 1)}${indent}`)}]`;
  };
  return `${tensorHeader(t)}\n${render(0, 0)}`;
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

const TABLE_STYLE = 'border-collapse:collapse;font-family:var(--vscode-editor-font-family,monospace);font-size:var(--vscode-editor-font-size,12px)';
const TD = 'style="padding:1px 8px;text-align:right"';
const TH = 'style="padding:1px 8px;text-align:right;opacity:0.6;font-weight:normal"';

export function formatTensorHtml(t: Tensor): string {
  const rank = t.dims.length;
  const st = strides(t.dims);
  const head = `<div style="font-weight:bold;margin-bottom:4px">${escapeHtml(tensorHeader(t))}</div>`;
  if (rank === 0) return `<div>${head}${table(t, 0, 1, 1, 1, 1)}</div>`;
  const rows = rank === 1 ? 1 : t.dims[rank - 2]!;
  const cols = t.dims[rank - 1]!;
  const rowStride = rank === 1 ? 0 : st[rank - 2]!;
  const lead = t.dims.slice(0, Math.max(0, rank - 2));
  const leadShown = lead.map((d) => shownIndices(d, true, 2));
  const blocks: string[] = [];
  const walk = (axis: number, offset: number, index: number[]) => {
    if (axis === lead.length) {
      const caption = lead.length ? `<div style="margin:6px 0 2px;opacity:0.8">[${[...index, ':', ':'].join(', ')}]</div>` : '';
      blocks.push(caption + table(t, offset, rows, cols, rowStride, rank === 1 ? 0 : 1));
      return;
    }
    for (const i of leadShown[axis]!) {
      if (i < 0) blocks.push('<div style="opacity:0.6">⋮</div>');
      else walk(axis + 1, offset + i * st[axis]!, [...index, i]);
    }
  };
  walk(0, 0, []);
  return `<div>${head}${blocks.join('')}</div>`;
}

/** One 2-D slice: `rows` × `cols` starting at `offset`; rowLabels 0 hides row headers (1-D tensors). */
function table(t: Tensor, offset: number, rows: number, cols: number, rowStride: number, rowLabels: number): string {
  const half = HTML_MAX / 2;
  const shownRows = shownIndices(rows, rows > HTML_MAX, half);
  const shownCols = shownIndices(cols, cols > HTML_MAX, half);
  const values: Scalar[] = [];
  for (const r of shownRows) for (const c of shownCols) if (r >= 0 && c >= 0) values.push(elementAt(t, offset + r * rowStride + c));
  const format = makeFormatter(t.dtype, values);
  const scalar = t.dims.length === 0;
  let html = `<table style="${TABLE_STYLE}">`;
  if (!scalar) {
    html += `<tr>${rowLabels ? `<th ${TH}></th>` : ''}${shownCols.map((c) => `<th ${TH}>${c < 0 ? '…' : c}</th>`).join('')}</tr>`;
  }
  for (const r of shownRows) {
    html += '<tr>';
    if (rowLabels) html += `<th ${TH}>${r < 0 ? '⋮' : r}</th>`;
    for (const c of shownCols) {
      const text = r < 0 ? (c < 0 ? '⋱' : '⋮') : c < 0 ? '…' : format(elementAt(t, offset + r * rowStride + c));
      html += `<td ${TD}>${escapeHtml(text)}</td>`;
    }
    html += '</tr>';
  }
  return `${html}</table>`;
}
