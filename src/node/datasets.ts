// Datasets registered on the node. The files stay where they are on the node's disk; the node keeps
// only their metadata and schema (columns/dtypes/shape), which is all it ever shows a client: rows never
// leave the node through these operations.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { createGunzip } from 'node:zlib';
import { parse } from 'csv-parse';
import { gridError, GridError, ErrorCodes } from '../core/errors';
import { readNpyHeader } from '../core/npy';
import { ID_PATTERN } from '../core/protocol/model-ref';
import type { DType } from '../core/protocol/tensor';
import { decodeTensorProto } from '../compute/onnx/tensor-proto';
import type { Row, Store } from './store/sql';

export type DatasetFormat = 'csv' | 'npy' | 'tensor-proto';

export interface DatasetColumn { name: string; dtype: 'int64' | 'float64' | 'string' }

export interface DatasetSchema {
  /** CSV: number of data rows; arrays: the first dimension. */
  rows: number;
  /** CSV columns, in file order. */
  columns?: DatasetColumn[];
  /** Arrays (.npy, TensorProto): element type and full shape. */
  dtype?: DType;
  dims?: number[];
  /** The column holding the target, when one was named or the file says so. */
  label?: string;
  /** Class names of the label, when the file names them. */
  classes?: string[];
}

export interface DatasetInfo {
  id: string;
  name: string;
  description: string;
  tags: string[];
  format: DatasetFormat;
  size: number;
  schema: DatasetSchema;
  created: string;
}

export interface DatasetSpec {
  name: string;
  path: string;
  tags?: string[];
  description?: string;
  /** CSV column (name or 0-based index) that holds the label. */
  label?: string;
}

function formatOf(file: string): DatasetFormat {
  const lower = file.toLowerCase();
  if (lower.endsWith('.csv') || lower.endsWith('.csv.gz')) return 'csv';
  if (lower.endsWith('.npy')) return 'npy';
  if (lower.endsWith('.pb')) return 'tensor-proto';
  throw gridError('INVALID_DATASET', `${file}: unknown dataset format; use .csv, .csv.gz, .npy or an ONNX TensorProto .pb`);
}

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$/i;
const INTEGER = /^[-+]?\d+$/;

/** Reads a CSV's schema, streaming (constant memory whatever the row count). */
async function csvSchema(file: string, label: string | undefined): Promise<DatasetSchema> {
  const input = fs.createReadStream(file);
  const parser = parse({ relax_column_count: true, skip_empty_lines: true, trim: true });
  (file.toLowerCase().endsWith('.gz') ? input.pipe(createGunzip()) : input).pipe(parser);
  let first: string[] | undefined;
  let rows = 0;
  let width = 0;
  let kinds: ('int64' | 'float64' | 'string')[] = [];
  const widen = (i: number, v: string) => {
    const k = kinds[i];
    if (k === 'string' || v === '') return; // an empty field is a missing value, not a string
    if (INTEGER.test(v)) { kinds[i] = k ?? 'int64'; return; }
    kinds[i] = NUMBER.test(v) ? 'float64' : 'string';
  };
  try {
    for await (const rec of parser as AsyncIterable<string[]>) {
      if (first === undefined) { first = rec; continue; }
      // The first data row fixes the width every later row must have.
      if (rows === 0) { width = rec.length; kinds = new Array(width); }
      if (rec.length !== width) throw gridError('INVALID_DATASET', `${file}: row ${rows + 2} has ${rec.length} fields, expected ${width}`);
      rec.forEach((v, i) => widen(i, v));
      rows++;
    }
  } catch (err) {
    if (err instanceof GridError) throw err;
    throw new GridError(ErrorCodes.INVALID_DATASET, `${file}: not readable as CSV: ${(err as Error).message}`, undefined, { cause: err });
  } finally {
    input.destroy();
  }
  if (first === undefined) throw gridError('INVALID_DATASET', `${file}: the CSV file is empty`);
  if (rows === 0) { width = first.length; kinds = new Array(width).fill('string'); }
  const schema: DatasetSchema = { rows, columns: [] };
  let names: string[];
  const firstNumeric = first.every((v) => NUMBER.test(v));
  const sklearn = first.length >= 2 && INTEGER.test(first[0]!) && INTEGER.test(first[1]!) &&
    Number(first[0]) === rows && Number(first[1]) === width - 1;
  if (sklearn) {
    // scikit-learn's bundled UCI layout: "n_samples,n_features,class names…", features, then the target.
    names = [...Array.from({ length: width - 1 }, (_, i) => `feature_${i}`), 'target'];
    schema.label = 'target';
    if (first.length > 2) schema.classes = first.slice(2);
  } else if (firstNumeric) {
    // No header line: the first line is data too.
    if (first.length !== width && rows > 0) throw gridError('INVALID_DATASET', `${file}: row 1 has ${first.length} fields, expected ${width}`);
    first.forEach((v, i) => widen(i, v));
    rows++;
    schema.rows = rows;
    names = Array.from({ length: first.length }, (_, i) => `column_${i}`);
  } else {
    if (first.length !== width) throw gridError('INVALID_DATASET', `${file}: the header has ${first.length} names but rows have ${width} fields`);
    names = first;
  }
  schema.columns = names.map((name, i) => ({ name, dtype: kinds[i] ?? 'string' }));
  if (label !== undefined) {
    const byIndex = INTEGER.test(label) ? names[Number(label)] : undefined;
    const col = byIndex ?? names.find((n) => n === label);
    if (col === undefined) throw gridError('INVALID_DATASET', `${file}: no column ${JSON.stringify(label)} to use as the label; columns are ${names.slice(0, 12).join(', ')}${names.length > 12 ? ', …' : ''}`);
    schema.label = col;
  } else if (schema.label === undefined && !firstNumeric) {
    const guess = names.find((n) => /^(label|target|class|y)$/i.test(n));
    if (guess) schema.label = guess;
  }
  return schema;
}

async function npySchema(file: string): Promise<DatasetSchema> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const head = Buffer.alloc(65536);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const { dtype, dims, dataOffset } = readNpyHeader(head.subarray(0, bytesRead), file);
    const size = (await fh.stat()).size;
    if (dtype !== 'string') {
      const n = dims.reduce((a, b) => a * b, 1);
      const per = ({ float16: 2, float32: 4, float64: 8, int8: 1, int16: 2, int32: 4, int64: 8, uint8: 1, uint16: 2, uint32: 4, uint64: 8, bool: 1 } as const)[dtype];
      if (size - dataOffset !== n * per) throw gridError('INVALID_DATASET', `${file}: ${dtype} [${dims.join(', ')}] needs ${n * per} data bytes, the file has ${size - dataOffset}`);
    }
    return { rows: dims[0] ?? 1, dtype, dims };
  } catch (err) {
    if (err instanceof GridError && err.code !== ErrorCodes.INVALID_DATASET) throw new GridError(ErrorCodes.INVALID_DATASET, err.message, err.details);
    throw err;
  } finally {
    await fh.close();
  }
}

async function tensorProtoSchema(file: string): Promise<DatasetSchema> {
  try {
    const { tensor } = decodeTensorProto(await fs.promises.readFile(file));
    return { rows: tensor.dims[0] ?? 1, dtype: tensor.dtype, dims: [...tensor.dims] };
  } catch (err) {
    throw new GridError(ErrorCodes.INVALID_DATASET, `${file}: not an ONNX TensorProto: ${(err as Error).message}`, undefined, { cause: err });
  }
}

export async function readSchema(file: string, format: DatasetFormat, label?: string): Promise<DatasetSchema> {
  if (format === 'csv') return csvSchema(file, label);
  if (label !== undefined) throw gridError('INVALID_DATASET', `${file}: label=COL applies to CSV files only`);
  return format === 'npy' ? npySchema(file) : tensorProtoSchema(file);
}

function cleanTags(tags: readonly string[] | undefined): string[] {
  const out = new Set<string>();
  for (const t of tags ?? []) {
    const tag = t.trim().toLowerCase();
    if (tag === '') continue;
    if (!/^[a-z0-9#:._-]{1,64}$/.test(tag)) throw gridError('INVALID_DATASET', `tag ${JSON.stringify(t)} must be 1-64 characters of a-z 0-9 # : . _ -`);
    out.add(tag);
  }
  return [...out];
}

function rowToInfo(r: Row): DatasetInfo {
  return {
    id: String(r.id), name: String(r.name), description: String(r.description), tags: JSON.parse(String(r.tags)) as string[],
    format: String(r.format) as DatasetFormat, size: Number(r.size), schema: JSON.parse(String(r.schema)) as DatasetSchema, created: String(r.created),
  };
}

export class DatasetStore {
  private readonly db: Store;

  constructor(db: Store) { this.db = db; }

  /**
   * Registers (or re-registers: the node registers its datasets from flags on every start) a file.
   * Returns the metadata and whether it is new.
   */
  async register(spec: DatasetSpec): Promise<{ info: DatasetInfo; added: boolean }> {
    if (!ID_PATTERN.test(spec.name)) throw gridError('INVALID_ID', `dataset name ${JSON.stringify(spec.name)} must be 1-128 characters of A-Z a-z 0-9 . _ -`);
    const file = path.resolve(spec.path);
    let stat: fs.Stats;
    try { stat = await fs.promises.stat(file); } catch { throw gridError('INVALID_DATASET', `dataset ${spec.name}: no file at ${file}`); }
    if (!stat.isFile()) throw gridError('INVALID_DATASET', `dataset ${spec.name}: ${file} is not a file`);
    const format = formatOf(file);
    const schema = await readSchema(file, format, spec.label);
    const tags = cleanTags(spec.tags);
    const description = spec.description ?? '';
    const existing = await this.get(spec.name);
    const created = existing?.created ?? new Date().toISOString();
    await this.db.run(`INSERT INTO datasets (id, name, description, tags, format, path, size, schema, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT(id) DO UPDATE SET description = excluded.description, tags = excluded.tags, format = excluded.format,
      path = excluded.path, size = excluded.size, schema = excluded.schema`,
    [spec.name, spec.name, description, JSON.stringify(tags), format, file, stat.size, JSON.stringify(schema), created]);
    return { info: (await this.get(spec.name))!, added: existing === undefined };
  }

  async get(id: string): Promise<DatasetInfo | undefined> {
    const r = await this.db.get('SELECT * FROM datasets WHERE id = ?', [id]);
    return r === undefined ? undefined : rowToInfo(r);
  }

  /** The file on the node's disk (for node-side training; never sent to a client). */
  async pathOf(id: string): Promise<string | undefined> {
    const r = await this.db.get('SELECT path FROM datasets WHERE id = ?', [id]);
    return r === undefined ? undefined : String(r.path);
  }

  async list(): Promise<DatasetInfo[]> {
    return (await this.db.all(`SELECT * FROM datasets ORDER BY ${this.db.textOrder('id')}`)).map(rowToInfo);
  }

  /** Datasets carrying every one of `tags` (PyGrid's search by tag). */
  async search(tags: readonly string[]): Promise<DatasetInfo[]> {
    const wanted = cleanTags(tags);
    return (await this.list()).filter((d) => wanted.every((t) => d.tags.includes(t)));
  }

  async remove(id: string): Promise<boolean> {
    return await this.db.run('DELETE FROM datasets WHERE id = ?', [id]) > 0;
  }
}

/** Parses `NAME=PATH[:label=COL][:tags=a,b][:description=TEXT]` (the grid-node --dataset flag). */
export function parseDatasetFlag(flag: string): DatasetSpec {
  const eq = flag.indexOf('=');
  if (eq <= 0) throw gridError('INVALID_DATASET', `--dataset ${JSON.stringify(flag)}: expected NAME=PATH[:label=COL][:tags=a,b][:description=TEXT]`);
  const name = flag.slice(0, eq);
  // Split only before a known option, so Windows paths (C:\data\x.csv) keep their colon.
  const [filePath, ...opts] = flag.slice(eq + 1).split(/:(?=(?:label|tags|description)=)/);
  const spec: DatasetSpec = { name, path: filePath! };
  for (const o of opts) {
    const [key, ...rest] = o.split('=');
    const value = rest.join('=');
    if (key === 'label') spec.label = value;
    else if (key === 'tags') spec.tags = value.split(',');
    else spec.description = value;
  }
  if (spec.path === '') throw gridError('INVALID_DATASET', `--dataset ${JSON.stringify(flag)}: the path is empty`);
  return spec;
}
