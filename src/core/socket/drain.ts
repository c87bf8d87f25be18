// Sending big binary frames (transfer chunks) without buffering them without bound: the one flow
// control shared by the client (uploads) and the node (downloads).

import WebSocket from 'ws';
import { gridError } from '../errors';

/**
 * Bytes a connection may hold unsent before the sender waits for them to drain. Big enough to keep a
 * fast link busy between wake-ups, small enough that a slow reader costs the sender little memory.
 */
export const DRAIN_THRESHOLD_BYTES = 4 * 1024 * 1024;

/**
 * Sends `frame`, and waits for the socket's buffer to drain only when it already holds
 * DRAIN_THRESHOLD_BYTES. Rejects with CONNECTION_DROPPED (saying `closed`) when the connection is not
 * open, or with the socket's own error when the send fails. `onSent`, when given, is called once the
 * socket no longer needs `frame` (written out, or failed): then its buffer may be reused.
 */
export function sendAndDrain(ws: WebSocket, frame: Uint8Array, closed: string, onSent?: () => void): Promise<void> {
  if (ws.readyState !== WebSocket.OPEN) return Promise.reject(gridError('CONNECTION_DROPPED', closed));
  if (ws.bufferedAmount < DRAIN_THRESHOLD_BYTES) {
    if (onSent) ws.send(frame, () => onSent());
    else ws.send(frame);
    return Promise.resolve();
  }
  return new Promise((resolve, reject) => ws.send(frame, (err) => {
    onSent?.();
    if (err) reject(gridError('CONNECTION_DROPPED', err.message));
    else resolve();
  }));
}
