// Node events (model added/removed, dataset added, peer connected) fanned out to subscribed
// connections, so the editor's views update without polling. Replicas on one database share their
// events through the store's notifications (LISTEN/NOTIFY), so a subscriber on any replica hears them.

import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/logger';
import { topicOf, type EventTopic, type NodeEvent } from '../core/protocol/messages';
import type { Store } from './store/sql';

/** What replicas share: the node's models, datasets and FL processes. Peer links belong to one replica. */
const SHARED_TOPICS: ReadonlySet<EventTopic> = new Set<EventTopic>(['models', 'datasets', 'fl']);
const CHANNEL = 'events';

/**
 * Who may see an event, when not every subscriber may (an FL worker's id lets whoever holds it ask for
 * that worker's place in a cycle: only the process's owner and admins see it). Given the subscriber's
 * session, or undefined when it has not signed in.
 */
export type EventAudience = (who: { user: string; role: string } | undefined) => boolean;

type Listener = (ev: NodeEvent, audience: EventAudience | undefined) => void;

export class NodeEvents {
  private readonly listeners = new Map<Listener, ReadonlySet<EventTopic>>();
  /** Tells the other replicas (set by share()). */
  private publish: ((ev: NodeEvent) => void) | undefined;

  /**
   * Shares events with the other replicas on `store` (a shared database; nothing to do embedded): this
   * node's events on the shared topics go out, and theirs come in to this node's subscribers. An event
   * with an audience (an FL worker's id) stays on the replica that made it.
   */
  share(store: Store, log: Logger): () => void {
    if (store.kind === 'embedded') return () => undefined;
    const origin = randomUUID();
    const stop = store.listen(CHANNEL, (payload) => {
      let note: { from?: unknown; ev?: NodeEvent };
      try { note = JSON.parse(payload) as typeof note; } catch { return; }
      if (note.from === origin || note.ev === undefined) return;
      this.deliver(note.ev, undefined);
    });
    this.publish = (ev) => {
      store.notify(CHANNEL, JSON.stringify({ from: origin, ev })).catch((err: unknown) => {
        log.warn({ err: (err as Error).message, event: ev.event }, 'could not tell the other replicas about an event; their subscribers miss it');
      });
    };
    return () => { stop(); this.publish = undefined; };
  }

  /** Calls `listener` for every event on `topics` until the returned function is called. */
  subscribe(topics: readonly EventTopic[], listener: Listener): () => void {
    this.listeners.set(listener, new Set(topics));
    return () => { this.listeners.delete(listener); };
  }

  emit(ev: NodeEvent, audience?: EventAudience): void {
    this.deliver(ev, audience);
    if (this.publish !== undefined && audience === undefined && SHARED_TOPICS.has(topicOf(ev))) this.publish(ev);
  }

  private deliver(ev: NodeEvent, audience: EventAudience | undefined): void {
    const topic = topicOf(ev);
    for (const [listener, topics] of [...this.listeners]) if (topics.has(topic)) listener(ev, audience);
  }

  /** Whether this node's events on the shared topics reach the other replicas' subscribers (share()). */
  get shared(): boolean {
    return this.publish !== undefined;
  }

  /** Whether anyone subscribed to `topic` (so an event that is costly to build can be skipped). */
  listening(topic: EventTopic): boolean {
    for (const topics of this.listeners.values()) if (topics.has(topic)) return true;
    return false;
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
