// Model-centric federated learning on a node (docs/federated-learning.md), attached by GridNode.start:
// the store, the engine with its cycle timers, the WebSocket handlers and the HTTP routes, one close().

import type { Logger } from '../../core/logger';
import type { GridRouter } from '../rpc/server';
import type { NodeEvents } from '../events';
import type { MetaDb } from '../store/db';
import { FlEngine, type AuthCheck } from './cycles';
import { FlEventForwarder } from './events';
import { registerFlHandlers } from './handlers';
import { flHttp, type FlHttp } from './http';
import { registerFlStatus } from './status';
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

export function attachFl(router: GridRouter, deps: { db: MetaDb; dataDir: string; log: Logger; auth?: AuthCheck; options?: FlOptions; events?: NodeEvents }): NodeFl {
  const store = new FlStore(deps.db, deps.dataDir);
  // flui: the editor's views follow FL changes through the node's `fl` events.
  const forwarder = deps.events === undefined ? undefined : new FlEventForwarder({ events: deps.events, store, log: deps.log });
  const engine = new FlEngine({ store, log: deps.log, ...(deps.auth !== undefined && { auth: deps.auth }), ...deps.options, ...(forwarder !== undefined && { onActivity: forwarder.onActivity }) });
  forwarder?.attach(engine);
  registerFlHandlers(router, engine);
  registerFlStatus(router, store);
  engine.start();
  return { engine, store, http: flHttp(engine, store, { log: deps.log }), close: async () => { await engine.close(); forwarder?.close(); } };
}
