// Digits partitions written as CSV files for nodes to register, and a recorder of every message a client
// receives, to check that only metrics and parameters leave a node.

import * as fs from 'node:fs';
import * as path from 'node:path';
import assert from 'node:assert/strict';
import type { Dataset } from '../../src/compute/data';
import type { GridClient } from '../../src/core/client';
import type { IncomingMessage } from '../../src/core/protocol/envelope';
import { decodeNamedTensors } from '../../src/core/protocol/tensor';

export const DIGITS = path.join(__dirname, '../../media/datasets/digits.csv.gz');

/** Writes a dataset as CSV: 64 feature columns named px0…, then `label`. Features are written unscaled. */
export function writeCsv(d: Dataset, file: string, featureScale = 1): string {
  const f = d.features.dims[1]!;
  const n = d.features.dims[0]!;
  const lines = [[...Array.from({ length: f }, (_, i) => `px${i}`), 'label'].join(',')];
  const x = d.features.data, y = d.labels.data as BigInt64Array;
  for (let r = 0; r < n; r++) {
    const row: string[] = [];
    for (let c = 0; c < f; c++) row.push(String(Math.round(x[r * f + c]! / featureScale)));
    row.push(String(y[r]));
    lines.push(row.join(','));
  }
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

/** Everything a client receives, kept for inspection. */
export function recordMessages(client: GridClient): IncomingMessage[] {
  const seen: IncomingMessage[] = [];
  client.socket.onMessage((m) => seen.push(m));
  return seen;
}

/** Longest array anywhere in a JSON value. */
function longestArray(v: unknown): number {
  if (Array.isArray(v)) return Math.max(v.length, ...v.map(longestArray));
  if (v !== null && typeof v === 'object') return Math.max(0, ...Object.values(v).map(longestArray));
  return 0;
}

/**
 * Rows never leave a node: every message is small JSON without long arrays, and the only binary
 * attachments are named tensors whose names are the model's parameters.
 */
export function assertNoRows(messages: IncomingMessage[], paramNames: ReadonlySet<string>, rows: number): void {
  assert.ok(messages.length > 0, 'messages were recorded');
  for (const m of messages) {
    const json = JSON.stringify(m.data ?? null);
    assert.ok(json.length < 16_384, `${m.type} carries ${json.length} bytes of JSON`);
    assert.ok(longestArray(m.data) < Math.min(rows, 64), `${m.type} carries an array of ${longestArray(m.data)} values`);
    if (m.attachment !== undefined) {
      const tensors = decodeNamedTensors(m.attachment);
      for (const name of Object.keys(tensors)) assert.ok(paramNames.has(name), `${m.type} attachment holds "${name}", not a model parameter`);
    }
  }
}
