// Model-centric FL as the palette and the notebook do it, over the extension's shared connection to a
// node: host a process from an ONNX model, download a checkpoint. No vscode import (the notebook bridge
// and its test use it too). Joining as a worker trains, so it runs in a process of its own (fl-join.ts).
import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { GridClient } from '../core/client';
import { gridError } from '../core/errors';
import { FlDownloadCheckpoint, FlHostTraining, FlListProcesses, type FlProcessInfo } from '../core/protocol/fl-messages';
import { bufferSource, fileSink, fileSource, memorySink } from '../core/socket/transfer';
import { DEFAULT_CLIENT_CONFIG } from './fl-presets';

export interface HostFlOptions {
  name: string;
  version: string;
  serverConfig: Record<string, unknown>;
  clientConfig?: Record<string, unknown>;
  /** An ONNX averaging plan the node runs at each cycle close instead of FedAvg (docs/federated-learning.md). */
  averagingPlan?: Uint8Array;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

/** Hosts an FL process from an ONNX model (a file or its bytes), uploaded in chunks; the node's record of it. */
export async function hostFlProcess(client: GridClient, model: string | Uint8Array, o: HostFlOptions): Promise<FlProcessInfo> {
  const source = typeof model === 'string' ? await fileSource(model) : bufferSource(model);
  const transfer = { ...(o.signal !== undefined && { signal: o.signal }), ...(o.onProgress !== undefined && { onProgress: o.onProgress }) };
  const upload = await client.socket.upload(source, transfer);
  const clientConfig = { ...DEFAULT_CLIENT_CONFIG, ...o.clientConfig, name: o.name, version: o.version };
  const r = await client.socket.request(FlHostTraining, {
    model_transfer_id: upload.transfer_id, client_config: clientConfig, server_config: o.serverConfig,
    ...(o.averagingPlan !== undefined && { averaging_plan: Buffer.from(o.averagingPlan).toString('base64') }),
  }, { timeout: 600_000, ...(o.signal !== undefined && { signal: o.signal }) });
  const p = (await flProcesses(client, r.name, r.version))[0];
  if (p === undefined) throw gridError('INTERNAL', `the node hosted ${r.name}@${r.version} but does not list it`);
  return p;
}

/** The node's FL processes named `name` (one version, or all), for a name its event has not brought yet. */
export async function flProcesses(client: GridClient, name: string, version?: string): Promise<FlProcessInfo[]> {
  const { processes } = await client.socket.request(FlListProcesses, {});
  return processes.filter((p) => p.name === name && (version === undefined || p.version === version));
}

type Which = number | string;

/** Asks the node for checkpoint `which` (a number, or an alias such as latest): its owner or an admin may. */
function offerOf(client: GridClient, p: { name: string; version?: string }, which: Which, signal: AbortSignal | undefined) {
  return client.socket.request(FlDownloadCheckpoint, { name: p.name, ...(p.version !== undefined && { version: p.version }), checkpoint: which }, signal !== undefined ? { signal } : {});
}

/** The bytes of checkpoint `which` of `name@version`, chunked and sha256-checked. */
export async function checkpointBytes(client: GridClient, p: { name: string; version?: string }, which: Which = 'latest', opts: { signal?: AbortSignal } = {}): Promise<Uint8Array> {
  const offer = await offerOf(client, p, which, opts.signal);
  const sink = memorySink();
  await client.socket.download(offer.download, sink, opts.signal !== undefined ? { signal: opts.signal } : {});
  return sink.bytes();
}

/** Writes checkpoint `which` to `dest` (chunked, sha256-checked, renamed into place when whole); its size. */
export async function downloadCheckpoint(client: GridClient, p: { name: string; version?: string }, which: Which, dest: string, opts: { signal?: AbortSignal; onProgress?(done: number, total: number): void } = {}): Promise<number> {
  const offer = await offerOf(client, p, which, opts.signal);
  await mkdir(dirname(dest), { recursive: true });
  const sink = await fileSink(dest);
  try {
    await client.socket.download(offer.download, sink, { ...(opts.signal !== undefined && { signal: opts.signal }), ...(opts.onProgress !== undefined && { onProgress: opts.onProgress }) });
    await sink.commit();
  } catch (err) {
    await sink.abort();
    throw err;
  }
  return offer.download.size;
}
