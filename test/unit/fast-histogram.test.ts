// The node's request and inference histograms (FastHistogram) read on /metrics exactly as prom-client's
// Histogram would, fed the same observations: scrapers and dashboards see no difference.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Histogram, Registry } from 'prom-client';
import { FastHistogram } from '../../src/node/metrics';

test('FastHistogram prints the same /metrics text as prom-client Histogram for the same observations, and forgets a removed series', async () => {
  const buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 1, 5];
  const [ours, theirs] = [new Registry(), new Registry()];
  const fast = new FastHistogram('grid_node_x_seconds', 'Time of x, by model.', 'model_id', buckets, ours);
  const prom = new Histogram({ name: 'grid_node_x_seconds', help: 'Time of x, by model.', labelNames: ['model_id'], buckets, registers: [theirs] });
  // Values on bucket bounds (le is inclusive), between them, above the last, and zero.
  const values = [0, 0.0005, 0.0007, 0.001, 0.003, 0.05, 0.2, 1, 4.9, 5, 7, 120];
  for (const [i, v] of values.entries()) {
    for (const model of ['mlp', 'digits "v2"', 'gone']) {
      fast.labels(model).observe(v * (i + 1));
      prom.labels({ model_id: model }).observe(v * (i + 1));
    }
  }
  fast.remove('gone');
  prom.remove({ model_id: 'gone' });
  assert.equal(await ours.metrics(), await theirs.metrics());
  assert.match(await ours.metrics(), /grid_node_x_seconds_count\{model_id="mlp"\} 12/);
});
