// A live metrics output in the calling cell, one display replaced in place, for both bridges' grid.train
// and grid.fedavg (the VS Code notebook's and the Jupyter kernel's), so a run looks the same in either.

import type { GridClient } from '../core/client';
import { ErrorCodes, toGridError } from '../core/errors';
import type { JobInfo } from '../core/protocol/training-messages';
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

/**
 * Follows a training job into `live` (train and validation curves, speed and time left, the test point at
 * the end), cancelling it on the node when the cell is interrupted; the job as it ended.
 */
export async function followTrainingLive(
  client: GridClient, started: JobInfo, live: LiveMetrics, context: GridCallContext, epochs: number, onJob?: (job: JobInfo) => void,
): Promise<JobInfo> {
  let job: JobInfo;
  try {
    // Interrupting the cell cancels the job on the node, and stops following it at once.
    job = await client.training.follow(started, {
      signal: context.signal, cancel: context.signal,
      onUpdate: (j, ev) => {
        onJob?.(j);
        if (ev?.kind !== 'batch' && ev?.kind !== 'epoch') return;
        addPoint(live.payload, 'train', { x: ev.epoch - 1 + ev.batch / Math.max(1, ev.batches), loss: ev.loss, accuracy: ev.accuracy });
        if (ev.kind === 'epoch' && ev.validation) addPoint(live.payload, 'validation', { x: ev.epoch, ...ev.validation });
        live.payload.note = `${Math.round(ev.samples_per_second)} samples/s · about ${Math.ceil(ev.eta_seconds)} s left`;
        live.update(ev.kind === 'epoch');
      },
    });
  } catch (err) {
    live.fail(err);
    throw err;
  }
  const r = job.result;
  if (r?.test) addPoint(live.payload, 'test', { x: epochs, ...r.test });
  live.payload.state = 'succeeded';
  return job;
}
