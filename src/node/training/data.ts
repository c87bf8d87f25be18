// A registered dataset read as tensors for node-side training and evaluation. The rows stay in this
// process; only what they train (parameters) and how well (metrics) ever leaves the node.

import { gridError } from '../../core/errors';
import { readCsvDataset, splitDataset, type Dataset } from '../../compute/data';
import type { DatasetInfo, DatasetStore } from '../datasets';

export interface DataSelection {
  datasetId: string;
  label?: string;
  featureScale?: number;
  testSplit?: number;
  seed?: number;
}

export interface LoadedData {
  info: DatasetInfo;
  /** The label column's name. */
  label: string;
  /** Rows to train on (everything but the test split). */
  train: Dataset;
  /** The held-out test split, when asked for. */
  test?: Dataset;
}

/** The dataset a train or evaluate request names, as the data loader takes it. */
export function selectionOf(data: { dataset_id: string; label?: string; feature_scale?: number; test_split?: number; split_seed?: number; seed?: number }): DataSelection {
  return {
    datasetId: data.dataset_id,
    ...(data.label !== undefined && { label: data.label }),
    ...(data.feature_scale !== undefined && { featureScale: data.feature_scale }),
    ...(data.test_split !== undefined && { testSplit: data.test_split }),
    ...((data.split_seed ?? data.seed) !== undefined && { seed: data.split_seed ?? data.seed }),
  };
}

/** Finds the label column: a name, a 0-based index, else the dataset's own label, else the last column. */
export function labelColumn(info: DatasetInfo, label: string | undefined): { index: number; name: string } {
  const columns = info.schema.columns ?? [];
  const names = columns.map((c) => c.name);
  const list = () => `${names.slice(0, 12).join(', ')}${names.length > 12 ? ', …' : ''}`;
  let index: number;
  if (label === undefined) {
    index = info.schema.label !== undefined ? names.indexOf(info.schema.label) : names.length - 1;
  } else if (/^\d+$/.test(label)) {
    index = Number(label);
    if (index >= names.length) throw gridError('INVALID_INPUT', `dataset "${info.id}" has ${names.length} columns; there is no label column ${label} (columns are ${list()})`, { label });
  } else {
    index = names.indexOf(label);
    if (index < 0) throw gridError('INVALID_INPUT', `dataset "${info.id}" has no column "${label}" to use as the label; columns are ${list()}`, { label });
  }
  return { index, name: names[index]! };
}

/** Reads a CSV dataset of the node into features [N, F] (float32) and labels, checking its schema first. */
export async function loadDataset(store: DatasetStore, sel: DataSelection, loss: 'cross_entropy' | 'mse'): Promise<LoadedData> {
  const info = await store.get(sel.datasetId);
  const file = await store.pathOf(sel.datasetId);
  if (info === undefined || file === undefined) throw gridError('NOT_FOUND', `no dataset "${sel.datasetId}" on this node`, { dataset_id: sel.datasetId });
  if (info.format !== 'csv' || !info.schema.columns) {
    throw gridError('INVALID_DATASET', `dataset "${info.id}" is ${info.format}; training reads CSV datasets (features and a label column)`, { dataset_id: info.id });
  }
  const label = labelColumn(info, sel.label);
  const text = info.schema.columns.find((c, i) => c.dtype === 'string' && i !== label.index);
  if (text) throw gridError('INVALID_DATASET', `dataset "${info.id}": column "${text.name}" holds text; training needs numeric features`, { dataset_id: info.id });
  if (info.schema.columns[label.index]!.dtype !== 'int64' && loss === 'cross_entropy') {
    throw gridError('INVALID_INPUT', `dataset "${info.id}": label column "${label.name}" is ${info.schema.columns[label.index]!.dtype}; cross-entropy needs integer class labels`, { label: label.name });
  }
  // The node named the columns column_0… only when the first line was data; otherwise that line is a
  // header (names, or scikit-learn's "n_samples,n_features,…" line) to skip.
  const headerless = info.schema.columns.every((c, i) => c.name === `column_${i}`);
  const data = await readCsvDataset(file, {
    labelColumn: label.index,
    labelKind: loss === 'cross_entropy' ? 'class' : 'value',
    header: !headerless,
    ...(sel.featureScale !== undefined && { featureScale: sel.featureScale }),
  });
  const rows = data.features.dims[0]!;
  if (rows !== info.schema.rows) {
    throw gridError('INVALID_DATASET', `dataset "${info.id}": read ${rows} rows, its schema says ${info.schema.rows}; re-register it if the file changed`, { dataset_id: info.id });
  }
  if (!sel.testSplit) return { info, label: label.name, train: data };
  const { train, test } = splitDataset(data, sel.testSplit, sel.seed ?? 0);
  if (test.features.dims[0] === 0) throw gridError('INVALID_INPUT', `test_split ${sel.testSplit} of ${rows} rows leaves no test rows`);
  return { info, label: label.name, train, test };
}
