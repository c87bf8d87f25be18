// Model-centric federated learning on a node (docs/federated-learning.md), attached by GridNode.start:
// the store, the engine with its cycle timers, the WebSocket handlers and the HTTP routes, one close().

import type { Logger } from '../../core/logger';
import type { GridRouter } from '../rpc/server';
import type { NodeEvents } from '../events';
import type { MetaDb } from '../store/db';
import { FlEngine, type AuthCheck } from './cycles';
import { flWorkerEvents } from './events';
import { processInfo, registerFlHandlers } from './handlers';
import { flHttp, type FlHttp } from './http';
import { FlStore } from './store';

export { flErrorData } from './handlers';

export interface NodeFl {
  readonly engine: FlEngine;
  readonly store: FlStore;
  readonly http: FlHttp;
  close(): Promise<void>;
}

export interface FlOptions {
  /** authenticate + cycle-request a minute from one address (default 600). */
  requestsPerMinute?: number;
}

export function attachFl(router: GridRouter, deps: { db: MetaDb; dataDir: string; log: Logger; events: NodeEvents; auth?: AuthCheck; options?: FlOptions }): NodeFl {
  const store = new FlStore(deps.db, deps.dataDir);
  // flui: each worker's answer and report as fl-worker events, for the editor's tree.
  const engine = new FlEngine({ store, log: deps.log, ...(deps.auth !== undefined && { auth: deps.auth }), ...deps.options, onActivity: flWorkerEvents(deps.events, deps.log) });
  registerFlHandlers(router, engine, store);
  // Status is read from the database: only worth it while someone listens.
  engine.on('changed', (id) => {
    if (!deps.events.listening('fl')) return;
    const p = store.process(id);
    if (p !== undefined) deps.events.emit({ event: 'fl-process-updated', process: processInfo(store, p) });
  });
  engine.start();
  return { engine, store, http: flHttp(engine, store, { log: deps.log }), close: () => engine.close() };
}
