// The model-centric FL messages over the node's WebSocket (reference §1.3). PyGrid-era clients send
// `{type, data}` without a request_id; the router answers them with `{type, data}` all the same. A
// refusal is an error reply: our coded `error`, plus `data: {error, status: "rejected"}` (errorData
// below) because syft.js and PySyft read `data.error` and KotlinSyft reads `status` first.

import { readFile, rm } from 'node:fs/promises';
import { gridError, type GridError } from '../../core/errors';
import { FlAuthenticate, FlCycleRequest, FlHostTraining, FlReport } from '../../core/protocol/fl-messages';
import type { GridRouter, HandlerContext } from '../rpc/server';
import type { FlEngine } from './cycles';
import { decodeText } from './state';

/** The `data` of an error reply to a model-centric message: what PyGrid-era clients read. */
export function flErrorData(type: string, err: GridError): unknown {
  if (!type.startsWith('model-centric/')) return undefined;
  return { status: 'rejected', error: err.message, code: err.code };
}

function blob(text: string, what: string): Uint8Array {
  const bytes = decodeText(text);
  if (bytes === undefined) throw gridError('INVALID_MESSAGE', `${what} is neither hex nor base64 text`);
  return bytes;
}

/** {name: text} or {name: {variant: text}} → {name: {variant: bytes}}; a bare text is the `list` variant (PyGrid's default). */
function blobs(group: Record<string, string | Record<string, string>> | undefined, what: string): Record<string, Record<string, Uint8Array>> {
  const out: Record<string, Record<string, Uint8Array>> = {};
  for (const [name, v] of Object.entries(group ?? {})) {
    out[name] = typeof v === 'string'
      ? { list: blob(v, `${what}.${name}`) }
      : Object.fromEntries(Object.entries(v).map(([variant, text]) => [variant, blob(text, `${what}.${name}.${variant}`)]));
  }
  return out;
}

async function modelBytes(data: { model?: string | undefined; model_transfer_id?: string | undefined }, ctx: HandlerContext): Promise<Uint8Array> {
  if (data.model_transfer_id !== undefined) {
    const upload = ctx.takeUpload(data.model_transfer_id);
    try { return await readFile(upload.path); } finally { await rm(upload.path, { force: true }); }
  }
  if (data.model !== undefined) return blob(data.model, 'model');
  if (ctx.attachment !== undefined && ctx.attachment.length > 0) return ctx.attachment;
  throw gridError('INVALID_MESSAGE', 'host-training needs a model: "model" (a State as hex or base64), the frame\'s binary attachment (ONNX), or "model_transfer_id" (an upload)');
}

export function registerFlHandlers(router: GridRouter, engine: FlEngine): void {
  router.handle(FlHostTraining, async (data, ctx) => {
    const user = ctx.connection.session.user;
    // PyGrid let anyone host; here hosting is a node change like host-model: a signed-in user.
    if (typeof user !== 'string') {
      if (data.model_transfer_id !== undefined) await rm(ctx.takeUpload(data.model_transfer_id).path, { force: true }).catch(() => undefined);
      throw gridError('UNAUTHENTICATED', 'model-centric/host-training needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)');
    }
    const model = await modelBytes(data, ctx);
    const process = await engine.host({
      owner: user,
      model,
      plans: blobs(data.plans, 'plans'),
      protocols: blobs(data.protocols, 'protocols'),
      averagingPlan: typeof data.averaging_plan === 'string' && data.averaging_plan.length > 0 ? blob(data.averaging_plan, 'averaging_plan') : undefined,
      clientConfig: data.client_config,
      serverConfig: data.server_config,
    });
    return { status: 'success' as const, model_id: process.id, name: process.name, version: process.version };
  });

  router.handle(FlAuthenticate, (data, ctx) => engine.authenticate(data, ctx.connection.remoteAddress));

  router.handle(FlCycleRequest, (data, ctx) => engine.cycleRequest({ ...data, version: data.version ?? undefined }, ctx.connection.remoteAddress));

  router.handle(FlReport, (data) => engine.report(data));
}
