// Which datasets take part in a FedAvg run: one rule for the CLI's --tag, the palette's Train and the
// notebook's grid.fedavg. No heavy import: the palette matches participants before loading compute.

import type { GridClient } from '../core/client';
import { gridError } from '../core/errors';
import type { DatasetInfo } from '../core/protocol/messages';

/** A node offered to a FedAvg run: its client, the name the user knows it by, its datasets if already listed. */
export interface ParticipantNode {
  client: GridClient;
  name?: string;
  datasets?: readonly DatasetInfo[];
}

/** A node dataset chosen for a run; `node` indexes the nodes given to participantsByTag. */
export interface NodeParticipant {
  kind?: 'node';
  client: GridClient;
  datasetId: string;
  name: string;
  dataset: DatasetInfo;
  node: number;
}

/**
 * The datasets of `datasets` that a run over `tags` trains on: every one carrying all the tags (PyGrid's
 * search by tag); where none does, the dataset whose id or name is the one tag given, so a user may name
 * a dataset directly.
 */
export function datasetsByTag(datasets: readonly DatasetInfo[], tags: readonly string[]): DatasetInfo[] {
  const tagged = datasets.filter((d) => tags.every((t) => d.tags.includes(t)));
  if (tagged.length > 0 || tags.length !== 1) return tagged;
  return datasets.filter((d) => d.id === tags[0] || d.name === tags[0]).slice(0, 1);
}

/**
 * Every dataset on each node that datasetsByTag picks, as participants: named by their node, or
 * `node#dataset` where one node gives several. A node without a listing is asked for its datasets.
 * Refuses (GRID_ERR_NOT_FOUND) a run with no participant, and with `named`, a node the user named
 * that gives none.
 */
export async function participantsByTag(nodes: readonly (GridClient | ParticipantNode)[], tags: readonly string[], opts: { named?: boolean } = {}): Promise<NodeParticipant[]> {
  const out: NodeParticipant[] = [];
  const missing: string[] = [];
  for (const [node, n] of nodes.entries()) {
    const { client, name, datasets } = 'client' in n ? n : { client: n, name: undefined, datasets: undefined };
    const picked = datasetsByTag(datasets ?? await client.listDatasets(), tags);
    const base = name ?? client.socket.status.url ?? 'node';
    if (picked.length === 0) missing.push(base);
    for (const d of picked) out.push({ client, datasetId: d.id, name: picked.length > 1 ? `${base}#${d.id}` : base, dataset: d, node });
  }
  const what = `a dataset tagged ${tags.map((t) => JSON.stringify(t)).join(' and ')}`;
  if (out.length === 0) throw gridError('NOT_FOUND', `no ${nodes.length > 0 ? `node of ${missing.join(', ')}` : 'connected node'} has ${what}`, { tags });
  if (opts.named && missing.length > 0) throw gridError('NOT_FOUND', `${missing.join(', ')} ${missing.length === 1 ? 'has' : 'have'} no ${what.slice(2)}`, { tags, nodes: missing });
  return out;
}
