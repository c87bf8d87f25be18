// `fl-status` (src/core/protocol/fl-status.ts): a read-only listing of the FL processes, their open
// cycle and their checkpoints, for `grid fl status`. Nothing here changes the engine's state.

import { FlStatus, type FlProcessStatus } from '../../core/protocol/fl-status';
import type { GridRouter } from '../rpc/server';
import type { FlProcess, FlStore } from './store';

/** The authentication settings' kinds, never their keys or secrets. */
function publicServerConfig(cfg: Record<string, unknown>): Record<string, unknown> {
  const { authentication, ...rest } = cfg;
  if (authentication === undefined || authentication === null || typeof authentication !== 'object') return rest;
  const kinds = ['secret', 'pub_key', 'endpoint'].filter((k) => (authentication as Record<string, unknown>)[k] !== undefined);
  return { ...rest, authentication: kinds };
}

export function processStatus(store: FlStore, p: FlProcess): FlProcessStatus {
  const open = store.openCycle(p.id);
  return {
    id: p.id, name: p.name, version: p.version, owner: p.owner, format: p.format, created: p.created,
    client_config: p.clientConfig, server_config: publicServerConfig(p.serverConfig),
    completed_cycles: store.completedCycles(p.id),
    cycle: open === undefined ? null : {
      sequence: open.sequence, start: new Date(open.startMs).toISOString(), end: open.endMs === undefined ? null : new Date(open.endMs).toISOString(),
      assigned: store.assignedCount(open.id), reported: store.reportedCount(open.id),
    },
    checkpoints: store.checkpoints(p.id).map((c) => ({ number: c.number, alias: c.alias, cycle: c.cycle ?? null, reports: c.reports, created: c.created })),
  };
}

export function registerFlStatus(router: GridRouter, store: FlStore): void {
  router.handle(FlStatus, (data) => {
    const processes = store.processes().filter((p) => (data?.name === undefined || p.name === data.name) && (data?.version === undefined || p.version === data.version));
    return { processes: processes.map((p) => processStatus(store, p)) };
  });
}
