// The node's `fl` events (src/core/protocol/messages.ts) from the engine's activity, so the editor's Grid
// tree follows FL processes, cycles, workers and checkpoints as they change instead of polling fl-status.

import type { Logger } from '../../core/logger';
import type { NodeEvents } from '../events';
import type { CycleClosed, FlActivity, FlEngine } from './cycles';
import { processStatus } from './status';
import type { FlStore } from './store';

/**
 * A process's record is rebuilt at most this often (its counts come from the store): a cycle with a
 * thousand workers sends a few updates a second, each with the counts of its moment, not a thousand.
 */
export const PROCESS_UPDATE_MS = 100;

export class FlEventForwarder {
  private readonly events: NodeEvents;
  private readonly store: FlStore;
  private readonly log: Logger;
  /** Processes with an update due, and its timer. */
  private readonly due = new Map<number, NodeJS.Timeout>();
  private closed = false;

  constructor(deps: { events: NodeEvents; store: FlStore; log: Logger }) {
    this.events = deps.events;
    this.store = deps.store;
    this.log = deps.log;
  }

  /** The engine's onActivity. Never throws: a view's event must not change a worker's answer. */
  readonly onActivity = (a: FlActivity): void => {
    this.guard(() => {
      if (a.kind === 'worker') {
        this.events.emit({
          event: 'fl-worker', process_id: a.processId, cycle: a.cycle ?? null, worker_id: a.workerId, status: a.status,
          ...(a.reason !== undefined && { reason: a.reason }),
        });
      }
      // A hosting, an assignment and a report each change the process's counts.
      if (a.kind === 'hosted' || a.status !== 'rejected') this.processUpdated(a.processId);
    });
  };

  /** Follows the engine's cycle closes (a new checkpoint, the next cycle). */
  attach(engine: FlEngine): void {
    const onClosed = (c: CycleClosed) => this.guard(() => this.processUpdated(c.processId));
    engine.on('cycle-closed', onClosed);
  }

  /** Stops the pending updates (the node is closing). Idempotent. */
  close(): void {
    this.closed = true;
    for (const t of this.due.values()) clearTimeout(t);
    this.due.clear();
  }

  /** The process's record goes out once the changes of the next PROCESS_UPDATE_MS are in (built then). */
  private processUpdated(processId: number): void {
    if (this.closed || this.due.has(processId) || !this.events.wants('fl')) return;
    const timer = setTimeout(() => {
      this.due.delete(processId);
      this.guard(() => {
        const p = this.store.process(processId);
        if (p !== undefined) this.events.emit({ event: 'fl-process-updated', process: processStatus(this.store, p) });
      });
    }, PROCESS_UPDATE_MS);
    timer.unref();
    this.due.set(processId, timer);
  }

  private guard(f: () => void): void {
    try {
      f();
    } catch (err) {
      this.log.warn({ err }, 'could not announce an FL change to subscribed editors');
    }
  }
}
