// The kernel decides how a value looks: it builds the mime bundle, VS Code picks the richest item it
// can render (application/json and text/html over image/png over text/plain), so every bundle also
// carries a text/plain fallback.

import { inspect } from 'node:util';
import type { MimeBundle } from './protocol';
import { asTensor, formatTensorHtml, formatTensorText } from './tensor-format';
import { imageLayout, tensorToPng } from './png';

const MIME = /^[a-z]+\/[a-z0-9.+-]+$/i;
const isJsonMime = (mime: string) => mime === 'application/json' || mime.endsWith('+json');

export function toMimeBundle(value: unknown, mime?: string): MimeBundle {
  if (mime !== undefined) return { [mime]: mimeData(mime, value) };
  const tensor = asTensor(value);
  if (tensor) {
    const text = formatTensorText(tensor);
    const layout = imageLayout(tensor);
    // No HTML for images: VS Code ranks text/html above image/png and would show the table.
    if (layout) return { 'image/png': tensorToPng(tensor, layout), 'text/plain': text };
    return { 'text/html': formatTensorHtml(tensor), 'text/plain': text };
  }
  if (typeof value === 'string') return { 'text/plain': value };
  if (isMimeBundle(value)) {
    const out: MimeBundle = {};
    for (const [m, data] of Object.entries(value)) out[m] = mimeData(m, data);
    return out;
  }
  const text = inspect(value, { depth: 6, maxArrayLength: 100, maxStringLength: 10_000, breakLength: 100 });
  if (isPlainData(value)) {
    try {
      const json = JSON.stringify(value);
      if (json !== undefined) return { 'application/json': json, 'text/plain': text };
    } catch {
      // cycles and bigints have no JSON form; the text form still shows them
    }
  }
  return { 'text/plain': text };
}

function mimeData(mime: string, data: unknown): string | Uint8Array {
  if (data instanceof Uint8Array) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (typeof data === 'string') return data;
  if (isJsonMime(mime)) return JSON.stringify(data) ?? 'null';
  return String(data);
}

/** `{ 'text/html': '<b>hi</b>' }`: every key a mime type, every value data for it. */
export function isMimeBundle(value: unknown): value is Record<string, unknown> {
  if (!isPlainObject(value)) return false;
  const entries = Object.entries(value);
  return entries.length > 0 && entries.every(([k, v]) => MIME.test(k) && (typeof v === 'string' || v instanceof Uint8Array || isJsonMime(k)));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isPlainData(value: unknown): boolean {
  return Array.isArray(value) || isPlainObject(value);
}
