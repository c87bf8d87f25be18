// The worker thread side of ./model-worker.ts; bundled as dist/model-thread.js. onnxruntime's load and
// run are synchronous native work: seconds for a big model, which on a node's main thread would stall
// every other client's requests and heartbeats. Two modes, by workerData.mode:
//   'check': load one model file, post its signature (or the coded error), end.
//   'serve': hold sessions and run them on request until terminated; messages carry an `id` answered
//            with { id, result } or { id, error }.
// A failure crosses to the calling thread in the catalogue's wire form (GridError.toWire, envelope.ts's WireError).

import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { gridError, toGridError } from '../core/errors';
import type { NamedTensors } from '../core/protocol/tensor';
import { loadModel, loadModelFile, type LoadModelOptions, type ModelHandle } from './backend';

export type ThreadData = { mode: 'check'; file: string; options: LoadModelOptions } | { mode: 'serve' };

export type ServeRequest =
  | { id: number; op: 'load'; bytes: Uint8Array; options: LoadModelOptions }
  | { id: number; op: 'run'; session: number; feeds: NamedTensors; outputs?: string[]; maxOutputBytes?: number }
  | { id: number; op: 'dispose'; session: number };

/** Output buffers this thread owns whole: moved to the caller instead of copied. */
function ownedBuffers(tensors: NamedTensors): ArrayBuffer[] {
  const seen = new Set<ArrayBuffer>();
  for (const t of Object.values(tensors)) {
    if (Array.isArray(t.data)) continue;
    const d = t.data as Uint8Array;
    if (d.buffer instanceof ArrayBuffer && d.byteOffset === 0 && d.byteLength === d.buffer.byteLength) seen.add(d.buffer);
  }
  return [...seen];
}

async function check(file: string, options: LoadModelOptions): Promise<void> {
  try {
    const handle = await loadModelFile(file, options);
    await handle.dispose();
    parentPort!.postMessage({ signature: handle.signature });
  } catch (err) {
    parentPort!.postMessage({ error: toGridError(err).toWire() });
  }
}

function serve(): void {
  const sessions = new Map<number, ModelHandle>();
  let next = 1;
  const answer = async (id: number, work: () => Promise<unknown>, transfer: (result: unknown) => ArrayBuffer[] = () => []) => {
    try {
      const result = await work();
      parentPort!.postMessage({ id, result }, transfer(result));
    } catch (err) {
      parentPort!.postMessage({ id, error: toGridError(err).toWire() });
    }
  };
  parentPort!.on('message', (m: ServeRequest) => {
    switch (m.op) {
      case 'load':
        void answer(m.id, async () => {
          const handle = await loadModel(m.bytes, m.options);
          const session = next++;
          sessions.set(session, handle);
          return { session, signature: handle.signature };
        });
        return;
      case 'run':
        void answer(m.id, async () => {
          const handle = sessions.get(m.session);
          if (handle === undefined) throw gridError('DISPOSED', `session ${m.session} is not loaded in the model thread`);
          // The size check runs here, so an oversized output never crosses to the node's thread.
          return handle.run(m.feeds, { ...(m.outputs !== undefined && { outputs: m.outputs }), ...(m.maxOutputBytes !== undefined && { maxOutputBytes: m.maxOutputBytes }) });
        }, (result) => ownedBuffers(result as NamedTensors));
        return;
      case 'dispose':
        void answer(m.id, async () => {
          const handle = sessions.get(m.session);
          sessions.delete(m.session);
          await handle?.dispose();
          return true;
        });
        return;
    }
  });
}

if (!isMainThread && parentPort) {
  const data = workerData as ThreadData;
  if (data.mode === 'check') void check(data.file, data.options);
  else serve();
}
