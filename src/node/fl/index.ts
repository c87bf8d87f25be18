// Model-centric federated learning on a node (docs/federated-learning.md), attached by GridNode.start:
// the store, the engine with its cycle timers, the WebSocket handlers and the HTTP routes, one close().

import { createHash, randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { gridError } from '../../core/errors';
import type { Logger } from '../../core/logger';
import type { NodeMetrics } from '../metrics';
import type { ModelStore } from '../models';
import type { GridRouter } from '../rpc/server';
import type { NodeEvents } from '../events';
import type { Store } from '../store/sql';
import { FlEngine, type AuthCheck } from './cycles';
import { flWorkerEvents } from './events';
import { processInfo, registerFlHandlers, type LinkedModels } from './handlers';
import { flHttp, type FlHttp } from './http';
import { FlSignalling } from './signalling';
import { FlStore } from './store';

export { flErrorData } from './handlers';

export interface NodeFl {
  readonly engine: FlEngine;
  readonly store: FlStore;
  readonly http: FlHttp;
  /** WebRTC signalling rooms of the processes' workers (docs/fl-auth-speed-rooms.md, Rooms). */
  readonly signalling: FlSignalling;
  close(): Promise<void>;
}

export interface FlOptions {
  /** authenticate + cycle-request a minute from one address (default 600). */
  requestsPerMinute?: number;
  /** pool_selection random: how long a draw collects askers before picking among them (default 1000 ms). */
  selectionWindowMs?: number;
  /** Worker rows of one FL process from one address (default 4096; the oldest stale ones make room). */
  maxWorkersPerAddress?: number;
  /** URL prefixes a non-admin may use as `server_config.authentication.endpoint` (default none: admins only). */
  authEndpoints?: readonly string[];
  /** How long a worker's endpoint check may take (default 5000 ms). */
  authEndpointTimeoutMs?: number;
}

export async function attachFl(router: GridRouter, deps: { db: Store; dataDir: string; blobsDir?: string; log: Logger; events: NodeEvents; models?: ModelStore; metrics?: NodeMetrics; auth?: AuthCheck; options?: FlOptions }): Promise<NodeFl> {
  // Checkpoint blobs and running sums go where the model blobs go (a shared dir for replicas), under
  // fl/ and fl-sums/: any replica may close a cycle, summing every replica's partial sum.
  const store = new FlStore(deps.db, deps.blobsDir ?? deps.dataDir, deps.dataDir);
  // A shared blob dir holds blobs other replicas have not committed a row for yet: no sweep there.
  if (deps.db.kind === 'embedded') await store.sweepBlobs();
  await store.sweepSums();
  const { models } = deps;
  const engine = new FlEngine({
    store, log: deps.log, ...(deps.auth !== undefined && { auth: deps.auth }), ...deps.options,
    // Each worker's answer and report as fl-worker events, for the editor's tree.
    onActivity: flWorkerEvents(deps.events, deps.log, async (id) => (await store.process(id))?.owner),
    ...(models !== undefined && {
      // A checkpoint of a process hosted from a model becomes that model's next version, its parent the
      // previous checkpoint's version; the checkpoint row learns its version in the model's transaction.
      publish: async (p, checkpoint, parentVersion, commit) => {
        // The parent may be a version another replica published (FL requests do not refresh the models).
        await models.fresh();
        const parent = models.get(`${p.linkedModel!}@${parentVersion}`);
        // The models' temp dir (same file system as their blobs, cleared at start).
        const file = path.join(deps.dataDir, 'tmp', `fl-${p.id}-${checkpoint.number}-${randomBytes(4).toString('hex')}.onnx`);
        await writeFile(file, checkpoint.bytes);
        const model = await models.host({
          // admin: who may train this model was checked when the process was hosted (its owner or an admin).
          id: p.linkedModel!, newVersion: true, parent: `${parent.id}@${parent.version}`, owner: p.owner, admin: true,
          allowDownload: parent.allow_download, allowRemoteInference: parent.allow_remote_inference,
          file, size: checkpoint.bytes.length, sha256: createHash('sha256').update(checkpoint.bytes).digest('hex'),
          alongside: (info) => commit(info.version),
        });
        deps.metrics?.models.set(models.count);
        deps.events.emit({ event: 'model-added', model });
      },
    }),
  });
  const linkable: LinkedModels | undefined = models === undefined ? undefined : {
    async take(ref, user, role) {
      const info = models.get(ref);
      if (info.owner !== user && role !== 'admin') throw gridError('FORBIDDEN', `model "${info.id}" belongs to ${info.owner}: only its owner or an admin may train it as an FL process`);
      return { id: info.id, version: info.version, bytes: await models.read(info.sha256, 0, info.size) };
    },
  };
  const signalling = new FlSignalling(store);
  signalling.register(router);
  registerFlHandlers(router, engine, store, linkable, signalling);
  // Status is read from the database: only worth it while someone listens, here or (for a new process
  // or a closed cycle, not every report) on another replica.
  engine.on('changed', (id, shared) => {
    if (!deps.events.listening('fl') && !(shared === true && deps.events.shared)) return;
    void (async () => {
      const p = await store.process(id);
      if (p !== undefined) deps.events.emit({ event: 'fl-process-updated', process: await processInfo(store, p) });
    })().catch((err: unknown) => deps.log.warn({ err, process: id }, 'reading an FL process for its event failed'));
  });
  await engine.start();
  return { engine, store, signalling, http: flHttp(engine, store, { log: deps.log }), close: () => engine.close() };
}
