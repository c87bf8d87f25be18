// Model-centric federated learning on a node (docs/federated-learning.md), attached by GridNode.start:
// the store, the engine with its cycle timers, the WebSocket handlers and the HTTP routes, one close().

import type { Logger } from '../../core/logger';
import type { GridRouter } from '../rpc/server';
import type { MetaDb } from '../store/db';
import { FlEngine, type AuthCheck } from './cycles';
import { registerFlHandlers } from './handlers';
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

export function attachFl(router: GridRouter, deps: { db: MetaDb; dataDir: string; log: Logger; auth?: AuthCheck; options?: FlOptions }): NodeFl {
  const store = new FlStore(deps.db, deps.dataDir);
  const engine = new FlEngine({ store, log: deps.log, ...(deps.auth !== undefined && { auth: deps.auth }), ...deps.options });
  registerFlHandlers(router, engine, store);
  engine.start();
  return { engine, store, http: flHttp(engine, store, { log: deps.log }), close: () => engine.close() };
}
