// The model-centric FL messages over the node's WebSocket (reference §1.3). PyGrid-era clients send
// `{type, data}` without a request_id; the router answers them with `{type, data}` all the same. A
// refusal is an error reply: our coded `error`, plus `data: {error, status: "rejected"}` (errorData
// below) because syft.js and PySyft read `data.error` and KotlinSyft reads `status` first.

import { open, readFile, rm } from 'node:fs/promises';
import { gridError, type GridError } from '../../core/errors';
import { FlAuthenticate, FlCycleRequest, FlDownloadCheckpoint, FlHostTraining, FlListProcesses, FlReport, type FlProcessInfo } from '../../core/protocol/fl-messages';
import type { GridRouter, HandlerContext } from '../rpc/server';
import type { FlEngine } from './cycles';
import type { FlSignalling } from './signalling';
import type { FlProcess, FlStore } from './store';
import { decodeText } from './state';

/**
 * The `data` of an error reply to a model-centric message: what PyGrid-era clients read. No other key:
 * KotlinSyft's strict JSON parsing refuses keys it does not know; the code is in the frame's `error`.
 */
export function flErrorData(type: string, err: GridError): unknown {
  if (!type.startsWith('model-centric/')) return undefined;
  return { status: 'rejected', error: err.message };
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

/** Where host-training may take a hosted model from (the node's ModelStore). */
export interface LinkedModels {
  /** The model's id and version and its bytes, for `user` (its owner or an admin); throws NOT_FOUND / FORBIDDEN. */
  take(ref: string, user: string, role: string): Promise<{ id: string; version: string; bytes: Uint8Array }>;
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

/** server_config without secrets: which authentication checks are set, not their keys. */
function publicServerConfig(cfg: Record<string, unknown>): Record<string, unknown> {
  const { authentication, ...rest } = cfg;
  if (authentication === undefined) return rest;
  const a = authentication as Record<string, unknown>;
  return { ...rest, authentication: { type: a.type, checks: ['secret', 'pub_key', 'endpoint'].filter((k) => a[k] !== undefined) } };
}

export async function processInfo(store: FlStore, p: FlProcess): Promise<FlProcessInfo> {
  const cycle = await store.openCycle(p.id);
  return {
    model_id: p.id, name: p.name, version: p.version, owner: p.owner, format: p.format, params: p.params,
    client_config: p.clientConfig, server_config: publicServerConfig(p.serverConfig), created: p.created,
    linked_model: p.linkedModel ?? null,
    averaging: await store.hasAveragingPlan(p.id) ? 'plan' : 'fedavg',
    completed_cycles: await store.completedCycles(p.id),
    cycle: cycle === undefined ? null : {
      sequence: cycle.sequence, start: new Date(cycle.startMs).toISOString(), end: cycle.endMs === undefined ? null : new Date(cycle.endMs).toISOString(),
      assigned: await store.assignedCount(cycle.id), reported: await store.reportedCount(cycle.id),
    },
    workers: await store.workerCount(p.id),
    checkpoints: (await store.checkpoints(p.id)).map((c) => ({
      number: c.number, alias: c.alias, created: c.created, reports: c.reports, cycle: c.cycle ?? null,
      model: p.linkedModel !== undefined && c.modelVersion !== undefined ? `${p.linkedModel}@${c.modelVersion}` : null,
    })),
  };
}

export function registerFlHandlers(router: GridRouter, engine: FlEngine, store: FlStore, linkable?: LinkedModels, signalling?: FlSignalling): void {
  router.handle(FlHostTraining, async (data, ctx) => {
    const user = ctx.connection.session.user;
    // PyGrid let anyone host; here hosting is a node change like host-model: a signed-in user.
    if (typeof user !== 'string') {
      if (data.model_transfer_id !== undefined) await rm(ctx.takeUpload(data.model_transfer_id).path, { force: true }).catch(() => undefined);
      throw gridError('UNAUTHENTICATED', 'model-centric/host-training needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)');
    }
    let linked: { id: string; version: string; bytes: Uint8Array } | undefined;
    if (data.model_ref !== undefined) {
      if (linkable === undefined) throw gridError('INVALID_MESSAGE', 'this node cannot train hosted models as FL processes');
      linked = await linkable.take(data.model_ref, user, typeof ctx.connection.session.role === 'string' ? ctx.connection.session.role : 'user');
    }
    const model = linked?.bytes ?? await modelBytes(data, ctx);
    if (linked !== undefined && model[0] !== 0x08) throw gridError('INVALID_MODEL', `model "${data.model_ref}" is not an ONNX model`);
    const process = await engine.host({
      owner: user,
      role: typeof ctx.connection.session.role === 'string' ? ctx.connection.session.role : 'user',
      model,
      linked: linked === undefined ? undefined : { id: linked.id, version: linked.version },
      plans: blobs(data.plans, 'plans'),
      protocols: blobs(data.protocols, 'protocols'),
      averagingPlan: typeof data.averaging_plan === 'string' && data.averaging_plan.length > 0 ? blob(data.averaging_plan, 'averaging_plan') : undefined,
      clientConfig: data.client_config,
      serverConfig: data.server_config,
    });
    return { status: 'success' as const, model_id: process.id, name: process.name, version: process.version };
  });

  router.handle(FlAuthenticate, async (data, ctx) => {
    const reply = await engine.authenticate(data, ctx.connection.remoteAddress, ctx.connection);
    // This socket is where the worker's room messages go, and the only one that may speak as it.
    signalling?.bind(reply.worker_id, ctx.connection);
    return reply;
  });

  router.handle(FlCycleRequest, (data, ctx) => engine.cycleRequest({ ...data, version: data.version ?? undefined }, ctx.connection.remoteAddress));

  router.handle(FlReport, (data) => engine.report(data));

  router.handle(FlListProcesses, async () => {
    const processes = [];
    for (const p of await store.processes()) processes.push(await processInfo(store, p));
    return { processes };
  });

  router.handle(FlDownloadCheckpoint, async (data, ctx) => {
    const { user, role } = ctx.connection.session;
    if (typeof user !== 'string') throw gridError('UNAUTHENTICATED', 'fl-download-checkpoint needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)');
    const p = await store.findProcess(data.name, data.version);
    if (p === undefined) throw gridError('NOT_FOUND', `no FL process ${data.name}${data.version !== undefined ? ` version ${data.version}` : ''}`);
    if (p.owner !== user && role !== 'admin') throw gridError('FORBIDDEN', `the checkpoints of FL process ${p.name} ${p.version} belong to ${p.owner}; only its owner or an admin may download them`);
    const which = data.checkpoint ?? 'latest';
    const c = await store.checkpoint(p.id, which);
    if (c === undefined) throw gridError('NOT_FOUND', `FL process ${p.name} ${p.version} has no checkpoint ${JSON.stringify(which)}`);
    const file = store.blobs.pathOf(c.sha256);
    const download = ctx.offerDownload({
      size: store.blobs.size(c.sha256), sha256: c.sha256,
      read: async (offset, length) => {
        const fh = await open(file, 'r');
        try {
          const buf = Buffer.alloc(length);
          const { bytesRead } = await fh.read(buf, 0, length, offset);
          return buf.subarray(0, bytesRead);
        } finally { await fh.close(); }
      },
    });
    return { model_id: p.id, name: p.name, version: p.version, number: c.number, format: p.format, download };
  });
}
