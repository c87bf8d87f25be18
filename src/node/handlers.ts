// The node's handlers for the grid operations in core/protocol/messages.ts. Access rule (docs/node.md):
// metadata reads are open to any connection; anything that changes the node, moves model bytes or
// spends its compute needs an authenticated session.

import { rm } from 'node:fs/promises';
import { gridError, GridError, ErrorCodes } from '../core/errors';
import {
  AddUser, ConnectNode, DatasetTags, DeleteModel, DownloadModel, GetId, GetModelInfo, HostModel, ListDatasets, ListModels,
  ListPeers, ProveIdentity, RunInference, Search, SetModelPermissions, Subscribe, DEFAULT_EVENT_TOPICS, modelRef,
} from '../core/protocol/messages';
import { decodeNamedTensors, encodeNamedTensorsParts, type NamedTensors, type Tensor } from '../core/protocol/tensor';
import { withAttachment, type GridRouter, type HandlerContext } from './rpc/server';
import type { Auth } from './auth';
import type { DatasetStore } from './datasets';
import type { NodeEvents } from './events';
import { checkInferenceInputs, type HeldOutputs, type InferenceLimits } from './inference';
import type { NodeMetrics } from './metrics';
import { checkModelId, checkModelRef, type ModelStore } from './models';
import { proofMessage, type NodeIdentity } from './identity';
import type { PeerLinks } from './peers';


export interface HandlerDeps {
  identity: NodeIdentity;
  auth: Auth;
  models: ModelStore;
  datasets: DatasetStore;
  events: NodeEvents;
  peers: PeerLinks;
  metrics: NodeMetrics;
  /** Bounds of run-inference, and the outputs held for download (src/node/inference.ts). */
  inference: { limits: InferenceLimits; held: HeldOutputs };
  /** host:port, for error messages a user can place ("node 127.0.0.1:5000 refused …"). */
  where(): string;
}

export interface SessionUser { user: string; role: string }

export function sessionOf(ctx: HandlerContext): SessionUser | undefined {
  const { user, role } = ctx.connection.session;
  return typeof user === 'string' ? { user, role: typeof role === 'string' ? role : 'user' } : undefined;
}

export function requireUser(ctx: HandlerContext, what: string): SessionUser {
  const s = sessionOf(ctx);
  if (s === undefined) {
    throw gridError('UNAUTHENTICATED', `${what} needs an authenticated session: authenticate first (grid: --user/--password or GRID_USER/GRID_PASSWORD)`);
  }
  return s;
}

/** A host-model `version`: a whole number from 1 (versions count 1, 2, 3…). */
function versionNumber(v: string): number {
  if (!/^[1-9][0-9]{0,8}$/.test(v)) throw gridError('INVALID_INPUT', `version ${JSON.stringify(v.slice(0, 64))} is not a version number: versions are whole numbers from 1 (1, 2, 3…), given by the node unless you name one`, { field: 'version' });
  return Number(v);
}

/** The model's owner and admins always use a model; its allow_* flags govern everyone else. */
export function ownsOrAdmin(s: SessionUser, model: { owner: string }): boolean {
  return s.user === model.owner || s.role === 'admin';
}

export function registerHandlers(router: GridRouter, deps: HandlerDeps): GridRouter {
  const { models, datasets, events, peers, metrics, identity } = deps;

  router.handle(GetId, (_data, ctx) => ({
    id: identity.id,
    name: identity.name,
    version: identity.version,
    capabilities: ['ping', 'socket-ping', 'authenticate', 'transfer', ...router.types()].sort(),
    user: sessionOf(ctx)?.user ?? null,
    public_key: identity.publicKey,
  }));

  // Open to anyone: a dialing node has no session here, and the signature is only good for its challenge.
  router.handle(ProveIdentity, (data) => ({
    id: identity.id,
    public_key: identity.publicKey,
    signature: identity.sign(proofMessage(data.challenge, identity.id, data.verifier_id)).toString('base64url'),
  }));

  router.handle(ListModels, (data) => ({ models: models.list({ allVersions: data?.all_versions === true }) }));

  router.handle(GetModelInfo, (data) => ({ model: models.get(data.model_id) }));

  router.handle(HostModel, async (data, ctx) => {
    // Claim the upload first: whatever happens next, the file is ours to clean up.
    const upload = ctx.takeUpload(data.transfer_id);
    let s: SessionUser;
    try {
      s = requireUser(ctx, 'host-model');
      checkModelId(data.model_id);
      if (data.parent !== undefined) checkModelRef(data.parent);
      if (data.version !== undefined) versionNumber(data.version);
    } catch (err) {
      await rm(upload.path, { force: true });
      throw err;
    }
    const model = await models.host({
      id: data.model_id,
      ...(data.name !== undefined && { name: data.name }),
      ...(data.version !== undefined && { version: versionNumber(data.version) }),
      ...(data.new_version !== undefined && { newVersion: data.new_version }),
      ...(data.parent !== undefined && { parent: data.parent }),
      allowDownload: data.allow_download ?? false,
      allowRemoteInference: data.allow_remote_inference ?? false,
      owner: s.user, admin: s.role === 'admin', file: upload.path, sha256: upload.sha256, size: upload.size,
    });
    ctx.log.info({ model_id: model.id, version: model.version, size: model.size, owner: s.user }, 'model hosted');
    metrics.models.set(models.count);
    events.emit({ event: 'model-added', model });
    return { model };
  });

  router.handle(DeleteModel, async (data, ctx) => {
    const s = requireUser(ctx, 'delete-model');
    const info = models.get(data.model_id);
    const all = data.all_versions === true ? models.list({ allVersions: true }).filter((m) => m.id === info.id) : [info];
    const foreign = all.find((m) => m.owner !== s.user);
    if (foreign !== undefined && s.role !== 'admin') {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused to delete model "${modelRef(foreign)}": it belongs to ${foreign.owner}`);
    }
    const gone = await models.delete(data.model_id, { allVersions: data.all_versions === true });
    const latest = models.has(info.id) ? models.get(info.id).version : null;
    ctx.log.info({ model_id: info.id, versions: gone.map((m) => m.version), by: s.user }, 'model deleted');
    metrics.models.set(models.count);
    if (latest === null) {
      metrics.forgetModel(info.id);
      events.emit({ event: 'model-removed', model_id: info.id });
    } else {
      for (const m of gone) events.emit({ event: 'model-removed', model_id: info.id, version: m.version });
    }
    return { model_id: info.id, deleted: true as const, versions: gone.map((m) => m.version), latest_version: latest };
  });

  router.handle(SetModelPermissions, async (data, ctx) => {
    const s = requireUser(ctx, 'set-model-permissions');
    const info = models.get(data.model_id);
    if (!ownsOrAdmin(s, info)) {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused to change the permissions of model "${info.id}": it belongs to ${info.owner}, and only its owner or an admin may`, { model_id: info.id, owner: info.owner });
    }
    const changed = await models.setPermissions(data.model_id, {
      ...(data.allow_download !== undefined && { allowDownload: data.allow_download }),
      ...(data.allow_remote_inference !== undefined && { allowRemoteInference: data.allow_remote_inference }),
    });
    const model = models.get(data.model_id);
    for (const m of changed) {
      ctx.log.info({ model_id: m.id, version: m.version, by: s.user, allow_download: m.allow_download, allow_remote_inference: m.allow_remote_inference }, 'model permissions changed');
      events.emit({ event: 'model-updated', model: m });
    }
    return { model };
  });

  router.handle(DownloadModel, (data, ctx) => {
    const s = requireUser(ctx, 'download-model');
    const model = models.get(data.model_id);
    if (!ownsOrAdmin(s, model) && !model.allow_download) {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused the download of model "${model.id}": allow_download is false`, { model_id: model.id });
    }
    const download = ctx.offerDownload({ size: model.size, sha256: model.sha256, read: (offset, length) => models.read(model.sha256, offset, length) });
    return { model, download };
  });

  // The hot path of remote inference: the outputs are copied once, straight into the frame.
  router.handle(RunInference, async (data, ctx) => {
    const s = requireUser(ctx, 'run-inference');
    const model = models.find(data.model_id);
    if (!ownsOrAdmin(s, model) && !model.allow_remote_inference) {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused inference on model "${model.id}": allow_remote_inference is false`, { model_id: model.id });
    }
    if (ctx.attachment === undefined) {
      throw gridError('INVALID_INPUT', 'run-inference carries its input tensors as the binary attachment of its frame; none was sent');
    }
    const { limits, held } = deps.inference;
    let feeds: NamedTensors;
    try {
      // Shapes, the string budget and known output sizes are checked from the headers, before decoding.
      feeds = decodeNamedTensors(ctx.attachment, { check: (headers) => checkInferenceInputs(model.signature, headers, limits, data.outputs), forSession: true });
    } catch (err) {
      throw err instanceof GridError ? err : new GridError(ErrorCodes.INVALID_TENSOR, (err as Error).message);
    }
    const started = performance.now();
    // feedsChecked: decodeNamedTensors made every tensor's data match its dtype and dims, and
    // checkInferenceInputs held them to the model's signature; the session does not check them again.
    const outputs = await models.run(model, feeds, { signal: ctx, maxOutputBytes: limits.maxOutputBytes, feedsChecked: true, ...(data.outputs !== undefined && { outputs: data.outputs }) });
    const ms = performance.now() - started;
    metrics.observeInference(model.id, ms);
    const described: { name: string; dtype: Tensor['dtype']; dims: number[] }[] = [];
    // The outputs' dims are arrays of their own (fromOrtTensor copies them): no copy again.
    for (const name in outputs) { const t = outputs[name]!; described.push({ name, dtype: t.dtype, dims: t.dims as number[] }); }
    const reply = { model_id: model.id, version: model.version, outputs: described, duration_ms: ms };
    const parts = encodeNamedTensorsParts(outputs);
    let size = 0;
    for (const p of parts) size += p.length;
    // Above the threshold, one frame would be too big for the client (or stall the connection): the
    // client downloads the outputs in chunks instead (GridClient.runInference does it transparently).
    if (size > limits.transferOutputBytes) return { ...reply, download: await held.hold(parts, size, (source) => ctx.offerDownload(source)) };
    return withAttachment(reply, parts);
  });

  router.handle(ListDatasets, async () => ({ datasets: await datasets.list() }));

  router.handle(Search, async (data) => {
    const found = await datasets.search(data.query);
    return { content: found.length > 0, datasets: found };
  });

  router.handle(DatasetTags, async () => ({ tags: [...new Set((await datasets.list()).flatMap((d) => d.tags))].sort() }));

  router.handle(ConnectNode, async (data, ctx) => {
    const s = requireUser(ctx, 'connect-node');
    // Checked before anything is dialled: a link speaks for the whole node.
    if (s.role !== 'admin') {
      throw gridError('FORBIDDEN', `node ${deps.where()} refused connect-node: linking nodes needs the admin role, and ${s.user} is not an admin`);
    }
    const peer = await peers.connect(data.address, { ...(data.id !== undefined && { id: data.id }), ...(data.auth !== undefined && { auth: data.auth }), signal: ctx.signal });
    return { peer };
  });

  router.handle(ListPeers, () => ({ peers: peers.list() }));

  router.handle(AddUser, async (data, ctx) => {
    const s = requireUser(ctx, 'add-user');
    if (s.role !== 'admin') throw gridError('FORBIDDEN', `node ${deps.where()} refused add-user: only an admin may add users, and ${s.user} is not one`);
    const role = data.role ?? 'user';
    await deps.auth.addUser(data.username, data.password, role);
    ctx.log.info({ user: data.username, role, by: s.user }, 'user added');
    return { username: data.username, role };
  });

  router.stream(Subscribe, async (data, ctx) => {
    const topics = data.topics ?? DEFAULT_EVENT_TOPICS;
    const unsubscribe = events.subscribe(topics, (ev, audience) => {
      if (audience === undefined || audience(sessionOf(ctx))) ctx.emit(ev);
    });
    try {
      await new Promise<void>((resolve) => {
        if (ctx.signal.aborted) resolve();
        else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
      });
    } finally {
      unsubscribe();
    }
    return {};
  });

  return router;
}
