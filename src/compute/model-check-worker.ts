// A worker thread that loads one ONNX model file with onnxruntime to check it and read its signature,
// then exits. Loading a big model takes seconds of synchronous native work (1 GiB: ~10 s here); done on
// a node's main thread it would stall every other client's requests and heartbeats for that long.
// Started by checkModelFile() in ./backend.ts; bundled as dist/model-check-worker.js.

import { readFile } from 'node:fs/promises';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { toGridError } from '../core/errors';
import { loadModel, type LoadModelOptions } from './backend';

export interface ModelCheckRequest { file: string; options: LoadModelOptions }

async function check(req: ModelCheckRequest): Promise<void> {
  try {
    const handle = await loadModel(await readFile(req.file), req.options);
    const signature = handle.signature;
    await handle.dispose();
    parentPort!.postMessage({ signature });
  } catch (err) {
    const e = toGridError(err, 'INVALID_MODEL');
    parentPort!.postMessage({ error: { code: e.code, message: e.message } });
  }
}

if (!isMainThread && parentPort) void check(workerData as ModelCheckRequest);
