// Prometheus metrics for /metrics. One registry per node, so two nodes in one process (tests, the
// extension host) do not share counters.

import { Counter, Gauge, Registry, collectDefaultMetrics, type MetricValueWithName } from 'prom-client';

/** One label value's buckets (not cumulative), sum and count. */
interface Series { readonly label: string; readonly counts: Float64Array; sum: number; count: number }

/**
 * A histogram with one label, read by the registry like prom-client's (same text on /metrics). An
 * observation is a bucket search over a few bounds and three additions: prom-client's validates and
 * hashes its label object on every call (~1–2 µs, twice per inference request); this one does that work
 * at scrape time, once per series.
 */
export class FastHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly bounds: Float64Array;
  private readonly series = new Map<string, Series>();

  constructor(readonly name: string, readonly help: string, private readonly labelName: string, buckets: readonly number[], registry: Registry) {
    this.bounds = Float64Array.from([...buckets].sort((a, b) => a - b));
    registry.registerMetric(this as never);
  }

  /** The series of one label value, to keep and observe into. */
  labels(value: string): { observe(v: number): void } {
    let s = this.series.get(value);
    if (s === undefined) {
      s = { label: value, counts: new Float64Array(this.bounds.length), sum: 0, count: 0 };
      this.series.set(value, s);
    }
    const series = s;
    const bounds = this.bounds;
    return {
      observe(v: number): void {
        if (!Number.isFinite(v)) return;
        let i = 0;
        while (i < bounds.length && v > bounds[i]!) i++;
        if (i < bounds.length) series.counts[i]! += 1;
        series.sum += v;
        series.count += 1;
      },
    };
  }

  remove(value: string): void {
    this.series.delete(value);
  }

  get(): { name: string; help: string; type: string; aggregator: string; values: MetricValueWithName<string>[] } {
    const values: MetricValueWithName<string>[] = [];
    for (const s of this.series.values()) {
      const labels = { [this.labelName]: s.label };
      let acc = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        acc += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: this.bounds[i]!, ...labels }, value: acc });
      }
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...labels }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** What Registry.resetMetrics calls. */
  reset(): void {
    this.series.clear();
  }
}

export class NodeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'type' | 'code'>;
  readonly requestSeconds: FastHistogram;
  readonly connections: Gauge;
  readonly models: Gauge;
  readonly datasets: Gauge;
  readonly inferenceSeconds: FastHistogram;

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics ?? true) collectDefaultMetrics({ register: this.registry, prefix: 'grid_node_' });
    this.requests = new Counter({ name: 'grid_node_requests_total', help: 'Requests handled, by message type and error code ("ok" on success).', labelNames: ['type', 'code'], registers: [this.registry] });
    this.requestSeconds = new FastHistogram('grid_node_request_seconds', 'Time to handle a request, by message type.', 'type', [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30], this.registry);
    this.connections = new Gauge({ name: 'grid_node_connections', help: 'Open WebSocket connections.', registers: [this.registry] });
    this.models = new Gauge({ name: 'grid_node_models', help: 'Models hosted.', registers: [this.registry] });
    this.datasets = new Gauge({ name: 'grid_node_datasets', help: 'Datasets registered.', registers: [this.registry] });
    this.inferenceSeconds = new FastHistogram('grid_node_inference_seconds', 'onnxruntime run time of remote inference, by model.', 'model_id', [0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5], this.registry);
  }

  // prom-client hashes and validates a label object on every call; a request is hot, so its series are
  // looked up once per label value and kept.
  private readonly requestSeries = new Map<string, { count: Counter.Internal; seconds: { observe(v: number): void } }>();
  private readonly inferenceSeries = new Map<string, { observe(v: number): void }>();

  observeRequest(type: string, ms: number, code: string | undefined): void {
    const key = code === undefined ? type : `${type}\u0000${code}`;
    let s = this.requestSeries.get(key);
    if (s === undefined) {
      s = { count: this.requests.labels({ type, code: code ?? 'ok' }), seconds: this.requestSeconds.labels(type) };
      if (this.requestSeries.size < 1024) this.requestSeries.set(key, s);
    }
    s.count.inc();
    s.seconds.observe(ms / 1000);
  }

  observeInference(modelId: string, ms: number): void {
    let h = this.inferenceSeries.get(modelId);
    if (h === undefined) {
      h = this.inferenceSeconds.labels(modelId);
      if (this.inferenceSeries.size < 1024) this.inferenceSeries.set(modelId, h);
    }
    h.observe(ms / 1000);
  }

  /** Drops a model's inference series (the model was deleted). */
  forgetModel(modelId: string): void {
    this.inferenceSeries.delete(modelId);
    this.inferenceSeconds.remove(modelId);
  }
}
