// Node events (model added/removed, dataset added, peer connected) fanned out to subscribed
// connections, so the editor's views update without polling.

import { topicOf, type EventTopic, type NodeEvent } from '../core/protocol/messages';

type Listener = (ev: NodeEvent) => void;

export class NodeEvents {
  private readonly listeners = new Map<Listener, ReadonlySet<EventTopic>>();

  /** Calls `listener` for every event on `topics` until the returned function is called. */
  subscribe(topics: readonly EventTopic[], listener: Listener): () => void {
    this.listeners.set(listener, new Set(topics));
    return () => { this.listeners.delete(listener); };
  }

  emit(ev: NodeEvent): void {
    const topic = topicOf(ev);
    for (const [listener, topics] of [...this.listeners]) if (topics.has(topic)) listener(ev);
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
