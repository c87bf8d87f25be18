// The node's fl-worker events (src/core/protocol/messages.ts) from the engine's onActivity: each worker's
// answer — accepted, or rejected with the node's reason — and its report, so the editor's Grid tree shows
// the workers of a cycle. The node keeps assignments, not refusals: this event is the only record of a
// refusal's reason. fl-process-updated (the counts) comes from the engine's 'changed' (index.ts).

import type { Logger } from '../../core/logger';
import type { NodeEvents } from '../events';
import type { FlActivity } from './cycles';

/** The engine's onActivity. Never throws: a view's event must not change a worker's answer. */
export function flWorkerEvents(events: NodeEvents, log: Logger, ownerOf: (processId: number) => Promise<string | undefined>): (a: FlActivity) => void {
  return (a) => {
    if (!events.listening('fl')) return;
    void (async () => {
      // A worker id is what a worker presents to ask for its place in a cycle: only the process's owner
      // and admins may see it (anyone may subscribe to the fl topic's process records).
      const owner = await ownerOf(a.processId);
      events.emit({
        event: 'fl-worker', process_id: a.processId, cycle: a.cycle ?? null, worker_id: a.workerId, status: a.status,
        ...(a.reason !== undefined && { reason: a.reason }),
      }, (who) => who !== undefined && (who.role === 'admin' || who.user === owner));
    })().catch((err: unknown) => {
      log.warn({ err }, 'could not announce an FL worker to subscribed editors');
    });
  };
}
