// Prometheus metrics for /metrics. One registry per node, so two nodes in one process (tests, the
// extension host) do not share counters.

import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class NodeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'type' | 'code'>;
  readonly requestSeconds: Histogram<'type'>;
  readonly connections: Gauge;
  readonly models: Gauge;
  readonly datasets: Gauge;
  readonly inferenceSeconds: Histogram<'model_id'>;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'grid_node_' });
    this.requests = new Counter({ name: 'grid_node_requests_total', help: 'Requests handled, by message type and error code ("ok" on success).', labelNames: ['type', 'code'], registers: [this.registry] });
    this.requestSeconds = new Histogram({ name: 'grid_node_request_seconds', help: 'Time to handle a request, by message type.', labelNames: ['type'], buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30], registers: [this.registry] });
    this.connections = new Gauge({ name: 'grid_node_connections', help: 'Open WebSocket connections.', registers: [this.registry] });
    this.models = new Gauge({ name: 'grid_node_models', help: 'Models hosted.', registers: [this.registry] });
    this.datasets = new Gauge({ name: 'grid_node_datasets', help: 'Datasets registered.', registers: [this.registry] });
    this.inferenceSeconds = new Histogram({ name: 'grid_node_inference_seconds', help: 'onnxruntime run time of remote inference, by model.', labelNames: ['model_id'], buckets: [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], registers: [this.registry] });
  }

  // prom-client hashes and validates a label object on every call; a request is hot, so its series are
  // looked up once per label value and kept.
  private readonly requestSeries = new Map<string, { count: Counter.Internal; seconds: Histogram.Internal<'type'> }>();
  private readonly inferenceSeries = new Map<string, Histogram.Internal<'model_id'>>();

  observeRequest(type: string, ms: number, code: string | undefined): void {
    const key = code === undefined ? type : `${type}\u0000${code}`;
    let s = this.requestSeries.get(key);
    if (s === undefined) {
      s = { count: this.requests.labels({ type, code: code ?? 'ok' }), seconds: this.requestSeconds.labels({ type }) };
      if (this.requestSeries.size < 1024) this.requestSeries.set(key, s);
    }
    s.count.inc();
    s.seconds.observe(ms / 1000);
  }

  observeInference(modelId: string, ms: number): void {
    let h = this.inferenceSeries.get(modelId);
    if (h === undefined) {
      h = this.inferenceSeconds.labels({ model_id: modelId });
      if (this.inferenceSeries.size < 1024) this.inferenceSeries.set(modelId, h);
    }
    h.observe(ms / 1000);
  }

  /** Drops a model's inference series (the model was deleted). */
  forgetModel(modelId: string): void {
    this.inferenceSeries.delete(modelId);
    this.inferenceSeconds.remove({ model_id: modelId });
  }
}
