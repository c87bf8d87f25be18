// Model-centric FL as the palette and the notebook do it, over the extension's shared connection to a
// node: host a process from an ONNX model, download a checkpoint. No vscode import (the notebook bridge
// and its test use it too). Joining as a worker trains, so it runs in a process of its own (fl-join.ts).
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { GridClient } from '../core/client';
import { gridError } from '../core/errors';
import { FlWorker } from '../core/fl-worker';
import { FlHostTraining } from '../core/protocol/fl-messages';
import { FlStatus, type FlProcessStatus } from '../core/protocol/fl-status';
import { bufferSource, fileSource } from '../core/socket/transfer';
import { DEFAULT_CLIENT_CONFIG } from './fl-presets';

export interface HostFlOptions {
  name: string;
  version: string;
  serverConfig: Record<string, unknown>;
  clientConfig?: Record<string, unknown>;
  signal?: AbortSignal;
  onProgress?(done: number, total: number): void;
}

/** Hosts an FL process from an ONNX model (a file or its bytes), uploaded in chunks; the node's record of it. */
export async function hostFlProcess(client: GridClient, model: string | Uint8Array, o: HostFlOptions): Promise<FlProcessStatus> {
  const source = typeof model === 'string' ? await fileSource(model) : bufferSource(model);
  const transfer = { ...(o.signal !== undefined && { signal: o.signal }), ...(o.onProgress !== undefined && { onProgress: o.onProgress }) };
  const upload = await client.socket.upload(source, transfer);
  const clientConfig = { ...DEFAULT_CLIENT_CONFIG, ...o.clientConfig, name: o.name, version: o.version };
  const r = await client.socket.request(FlHostTraining, { model_transfer_id: upload.transfer_id, client_config: clientConfig, server_config: o.serverConfig }, { timeout: 600_000, ...(o.signal !== undefined && { signal: o.signal }) });
  const { processes } = await client.socket.request(FlStatus, { name: r.name, version: r.version });
  const p = processes[0];
  if (p === undefined) throw gridError('INTERNAL', `the node hosted ${r.name}@${r.version} but does not list it`);
  return p;
}

/** The node's word on FL processes named `name` (one version, or all), for a name its event has not brought yet. */
export async function flProcesses(client: GridClient, name: string, version?: string): Promise<FlProcessStatus[]> {
  return (await client.socket.request(FlStatus, { name, ...(version !== undefined && { version }) })).processes;
}

/** The bytes of checkpoint `which` (a number, or an alias such as latest) of `name@version`. */
export async function checkpointBytes(client: GridClient, p: { name: string; version?: string }, which: number | string = 'latest', opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<Uint8Array> {
  const worker = new FlWorker(client.socket, { timeoutMs: opts.timeoutMs ?? 60_000 });
  try {
    return await worker.retrieveModel({ name: p.name, ...(p.version !== undefined && { version: p.version }), checkpoint: which, ...(opts.signal !== undefined && { signal: opts.signal }) });
  } finally {
    worker.dispose();
  }
}

/** Writes a checkpoint to `dest` atomically (a temp file beside it, then a rename). */
export async function downloadCheckpoint(client: GridClient, p: { name: string; version?: string }, which: number | string, dest: string, opts: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<number> {
  const bytes = await checkpointBytes(client, p, which, opts);
  await mkdir(dirname(dest), { recursive: true });
  const tmp = `${dest}.${process.pid}.part`;
  await writeFile(tmp, bytes);
  await rename(tmp, dest);
  return bytes.length;
}
