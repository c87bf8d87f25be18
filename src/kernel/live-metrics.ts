// A live metrics output in the calling cell, one display replaced in place, for both bridges' grid.train
// and grid.fedavg (the VS Code notebook's and the Jupyter kernel's), so a run looks the same in either.

import { ErrorCodes, toGridError } from '../core/errors';
import type { GridCallContext } from './bridge';
import { addPoint, METRICS_MIME, metricsText, type MetricsPayload } from './metrics';

export interface LiveMetrics {
  readonly payload: MetricsPayload;
  /** Shows the payload as it is now: always when `force`, else at most once per interval. */
  update(force: boolean): void;
  /** The call failed: cancelled (an interrupt) or failed, with the reason. */
  fail(err: unknown): void;
}

/** Shows `payload` at once; later changes to it show on update(). */
export function liveMetrics(context: GridCallContext, payload: MetricsPayload, intervalMs = 100): LiveMetrics {
  const displayId = `grid-metrics-${context.executionCount}-${Math.random().toString(36).slice(2, 8)}`;
  let last = 0;
  let shown = false;
  const send = () => {
    context.output({ kind: 'display', displayId, update: shown, data: { [METRICS_MIME]: JSON.stringify(payload), 'text/plain': metricsText(payload) } });
    shown = true;
    last = Date.now();
  };
  send();
  return {
    payload,
    update: (force) => {
      if (force || Date.now() - last >= intervalMs) send();
    },
    fail: (err) => {
      const e = toGridError(err);
      payload.state = e.code === ErrorCodes.ABORTED ? 'cancelled' : 'failed';
      payload.note = e.message;
      send();
    },
  };
}

/** A FedAvg round on the chart, its note naming the participants that sat out and why. */
export function showRound(live: LiveMetrics, r: RoundMetrics, dropped: readonly { node: string; error: { code: string; message: string } }[]): void {
  addPoint(live.payload, 'train', { x: r.round, ...r.train });
  if (r.test) addPoint(live.payload, 'test', { x: r.round, ...r.test });
  live.payload.note = `round ${r.round} took ${r.seconds.toFixed(1)} s${dropped.length ? ` · dropped: ${dropped.map((d) => `${d.node} (${d.error.code}: ${d.error.message})`).join('; ')}` : ''}`;
  live.update(true);
}

interface RoundMetrics {
  round: number;
  seconds: number;
  train: { loss: number; accuracy: number };
  test?: { loss: number; accuracy: number } | undefined;
}
