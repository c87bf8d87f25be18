// Node events (model added/removed, dataset added, peer connected) fanned out to subscribed
// connections, so the editor's views update without polling.

import { topicOf, type EventTopic, type NodeEvent } from '../core/protocol/messages';

/**
 * Who may see an event, when not every subscriber may (an FL worker's id lets whoever holds it ask for
 * that worker's place in a cycle: only the process's owner and admins see it). Given the subscriber's
 * session, or undefined when it has not signed in.
 */
export type EventAudience = (who: { user: string; role: string } | undefined) => boolean;

type Listener = (ev: NodeEvent, audience: EventAudience | undefined) => void;

export class NodeEvents {
  private readonly listeners = new Map<Listener, ReadonlySet<EventTopic>>();

  /** Calls `listener` for every event on `topics` until the returned function is called. */
  subscribe(topics: readonly EventTopic[], listener: Listener): () => void {
    this.listeners.set(listener, new Set(topics));
    return () => { this.listeners.delete(listener); };
  }

  emit(ev: NodeEvent, audience?: EventAudience): void {
    const topic = topicOf(ev);
    for (const [listener, topics] of [...this.listeners]) if (topics.has(topic)) listener(ev, audience);
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
