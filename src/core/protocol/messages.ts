// Grid operations (data-centric): one schema per message, shared by GridClient and the node's handlers.
// Names follow PyGrid's WebsocketGridClient where it had them (get-id, connect-node, host-model,
// run-inference, list-models, delete-model, download-model, search). Core messages (ping, cancel,
// authenticate, transfer-*) live in catalogue.ts.
//
// Ids are checked by the node (GRID_ERR_INVALID_ID), not here, so a bad id gets its own code instead of
// a generic schema error. Every `model_id` that names a hosted model takes a ref: `name` or `name@N`.

import { z } from 'zod';
import { defineRequest, defineStream, DownloadOffer, TRANSFER_ID } from './catalogue';
import { ID_PATTERN } from './model-ref';
import { DTYPES } from './tensor';
import { FlProcessInfo } from './fl-messages';
import { SmpcModelInfo } from './smpc-messages';

const Id = z.string().min(1).max(1024);

// Ids and model refs (`name`, `name@N`): a module without schemas, so the extension's activation can use them.
export { ID_PATTERN, MODEL_REF_PATTERN, modelRef, parseModelRef, refOf } from './model-ref';

export const ValueSignature = z.object({
  name: z.string(),
  dtype: z.enum(DTYPES),
  /** A size, a symbolic name ("batch"), or null when the model leaves it open. */
  dims: z.array(z.union([z.number(), z.string(), z.null()])),
});
export type ValueSignature = z.infer<typeof ValueSignature>;
export const ModelSignature = z.object({ inputs: z.array(ValueSignature), outputs: z.array(ValueSignature) });
export type ModelSignature = z.infer<typeof ModelSignature>;

export const ModelInfo = z.object({
  id: z.string(),
  name: z.string(),
  version: z.string(),
  signature: ModelSignature,
  size: z.number(),
  sha256: z.string(),
  allow_download: z.boolean(),
  allow_remote_inference: z.boolean(),
  owner: z.string(),
  /** ISO 8601. */
  created: z.string(),
  // Versions (older nodes send none of these): `id` is the model's name, `version` this version's number.
  /** How many versions of this model the node holds. */
  versions: z.number().optional(),
  /** The newest version: what the plain name resolves to. */
  latest_version: z.string().optional(),
  /** Lineage: the version this one was trained or averaged from (`name@N`). */
  parent: z.string().optional(),
  /** Lineage: the training job that stored this version. */
  job_id: z.string().optional(),
});
export type ModelInfo = z.infer<typeof ModelInfo>;

export const DatasetInfo = z.object({
  id: z.string(),
  name: z.string(),
  description: z.string(),
  tags: z.array(z.string()),
  format: z.enum(['csv', 'npy', 'tensor-proto']),
  size: z.number(),
  schema: z.object({
    rows: z.number(),
    columns: z.array(z.object({ name: z.string(), dtype: z.enum(['int64', 'float64', 'string']) })).optional(),
    dtype: z.enum(DTYPES).optional(),
    dims: z.array(z.number()).optional(),
    label: z.string().optional(),
    classes: z.array(z.string()).optional(),
  }),
  created: z.string(),
});
export type DatasetInfo = z.infer<typeof DatasetInfo>;

export const PeerInfo = z.object({
  id: z.string(),
  name: z.string(),
  address: z.string(),
  status: z.enum(['connecting', 'open', 'reconnecting', 'closed']),
  /** ISO 8601. */
  connected_at: z.string(),
  /** Why the link is not open, while the node keeps redialling (e.g. GRID_ERR_PEER_UNVERIFIED). */
  last_error: z.object({ code: z.string(), message: z.string() }).optional(),
});
export type PeerInfo = z.infer<typeof PeerInfo>;

const NoArgs = z.object({}).strict().optional();

// client → node: who are you? (PyGrid: {"id"}; we add what a client needs to show the node.)
export const GetId = defineRequest('get-id', {
  request: NoArgs,
  reply: z.object({
    id: z.string(),
    name: z.string(),
    version: z.string(),
    capabilities: z.array(z.string()),
    /** Who this connection is authenticated as, if anyone. */
    user: z.string().nullable(),
    /** The node's Ed25519 public key (raw 32 bytes, base64url); its id is derived from it (docs/node.md). */
    public_key: z.string().optional(),
  }),
  idempotent: true,
});

const BASE64URL_32 = /^[A-Za-z0-9_-]{43}$/;

// node → node (answered to anyone): prove that you hold the key of the id you claim. The dialing node
// sends 32 fresh random bytes and its own id; the peer signs
// "grid-node-proof/v1\n<challenge>\n<its id>\n<verifier_id>" with its Ed25519 key (src/node/identity.ts).
export const ProveIdentity = defineRequest('prove-identity', {
  request: z.object({
    /** 32 random bytes, base64url. */
    challenge: z.string().regex(BASE64URL_32),
    /** The dialing node's id. */
    verifier_id: z.string().regex(ID_PATTERN),
  }).strict(),
  reply: z.object({
    id: z.string().regex(ID_PATTERN),
    /** Raw 32-byte Ed25519 public key, base64url. */
    public_key: z.string().regex(BASE64URL_32),
    /** 64-byte Ed25519 signature, base64url. */
    signature: z.string().regex(/^[A-Za-z0-9_-]{86}$/),
  }),
  idempotent: true,
});

// client → node: open a node-to-node link from this node to `address` (PyGrid's connect-node).
export const ConnectNode = defineRequest('connect-node', {
  request: z.object({
    address: z.string().min(1).max(2048),
    /** The peer's id, if known; checked against what the peer says. */
    id: z.string().max(1024).optional(),
    auth: z.union([
      z.object({ username: z.string().min(1).max(128), password: z.string().max(1024) }).strict(),
      z.object({ token: z.string().min(1).max(512) }).strict(),
    ]).optional(),
  }).strict(),
  reply: z.object({ peer: PeerInfo }),
});

// client → node: this node's peers.
export const ListPeers = defineRequest('list-peers', {
  request: NoArgs,
  reply: z.object({ peers: z.array(PeerInfo) }),
  idempotent: true,
});

// client → node: store the uploaded ONNX model (bytes sent first with socket.upload → transfer_id).
// A model id already on the node is refused (GRID_ERR_ALREADY_EXISTS) unless the request asks for a new
// version: `new_version: true` (or the new number in `version`) stores the bytes as its next version.
export const HostModel = defineRequest('host-model', {
  request: z.object({
    model_id: Id,
    transfer_id: TRANSFER_ID,
    name: z.string().max(256).optional(),
    /** The version number to store, above every version the model has had; the next one by default. */
    version: z.string().max(64).optional(),
    /** Store as the next version when the model exists (created as version 1 when it does not). */
    new_version: z.boolean().optional(),
    /** Lineage: the version these bytes came from (`name@N`), e.g. the start of a FedAvg run. */
    parent: z.string().max(160).optional(),
    allow_download: z.boolean().optional(),
    allow_remote_inference: z.boolean().optional(),
  }).strict(),
  reply: z.object({ model: ModelInfo }),
});

// client → node: every model's metadata: its latest version (with `versions`, the count), or with
// `all_versions` every version, oldest first within a model.
export const ListModels = defineRequest('list-models', {
  request: z.object({ all_versions: z.boolean().optional() }).strict().optional(),
  reply: z.object({ models: z.array(ModelInfo) }),
  idempotent: true,
});

// client → node: one model's metadata.
export const GetModelInfo = defineRequest('model-info', {
  request: z.object({ model_id: Id }).strict(),
  reply: z.object({ model: ModelInfo }),
  idempotent: true,
});

// client → node: offer the model's bytes for download (socket.download(download.transfer_id, …)).
export const DownloadModel = defineRequest('download-model', {
  request: z.object({ model_id: Id }).strict(),
  reply: z.object({ model: ModelInfo, download: DownloadOffer }),
  idempotent: true,
});

// client → node: `name@N` deletes that version (the one before becomes the latest); `name` with
// `all_versions` deletes the model. A plain `name` deletes a model that has one version, and is refused
// (GRID_ERR_INVALID_INPUT) for one with several, which would otherwise lose versions by surprise.
export const DeleteModel = defineRequest('delete-model', {
  request: z.object({ model_id: Id, all_versions: z.boolean().optional() }).strict(),
  reply: z.object({
    model_id: z.string(),
    deleted: z.literal(true),
    /** The versions deleted. */
    versions: z.array(z.string()).optional(),
    /** The model's latest version now; null when none is left. */
    latest_version: z.string().nullable().optional(),
  }),
});

// client (the model's owner or an admin) → node: change who else may download or run a model. A flag
// left out keeps its value; the reply is the model as it now is.
export const SetModelPermissions = defineRequest('set-model-permissions', {
  request: z.object({
    model_id: Id,
    allow_download: z.boolean().optional(),
    allow_remote_inference: z.boolean().optional(),
  }).strict(),
  reply: z.object({ model: ModelInfo }),
  // Setting a flag twice leaves it as once: safe to re-send after a dropped connection.
  idempotent: true,
});

/** What run-inference answers (run-inference-shm adds where in the region the outputs went). */
export const RunInferenceReply = z.object({
  model_id: z.string(),
  /** The version that ran. */
  version: z.string().optional(),
  outputs: z.array(z.object({ name: z.string(), dtype: z.enum(DTYPES), dims: z.array(z.number()) })),
  duration_ms: z.number(),
  /** Outputs too big for one frame: the encoded tensors, to fetch with socket.download (no attachment then). */
  download: DownloadOffer.optional(),
});

// client → node, inputs as the MESSAGE frame's attachment (encodeNamedTensors); the reply carries the
// outputs the same way (or, when they are big, offers them as a download) and lists them here too.
export const RunInference = defineRequest('run-inference', {
  request: z.object({
    model_id: Id,
    /** Output names to compute; all outputs by default. */
    outputs: z.array(z.string()).max(4096).optional(),
  }).strict(),
  reply: RunInferenceReply,
  idempotent: true,
});

// client → node: every dataset's metadata and schema (never rows).
export const ListDatasets = defineRequest('list-datasets', {
  request: NoArgs,
  reply: z.object({ datasets: z.array(DatasetInfo) }),
  idempotent: true,
});

// client → node: datasets carrying all the tags (PyGrid's POST /search {"query": [tags]} → {"content"}).
export const Search = defineRequest('search', {
  request: z.object({ query: z.array(z.string().max(64)).max(64) }).strict(),
  reply: z.object({ content: z.boolean(), datasets: z.array(DatasetInfo) }),
  idempotent: true,
});

// client → node: every tag in use (PyGrid's /dataset-tags).
export const DatasetTags = defineRequest('dataset-tags', {
  request: NoArgs,
  reply: z.object({ tags: z.array(z.string()) }),
  idempotent: true,
});

// client (an admin) → node: create a user who can then authenticate.
export const AddUser = defineRequest('add-user', {
  request: z.object({
    username: z.string().min(1).max(128),
    password: z.string().min(1).max(1024),
    role: z.enum(['user', 'admin']).optional(),
  }).strict(),
  reply: z.object({ username: z.string(), role: z.enum(['user', 'admin']) }),
});

export const EventTopic = z.enum(['models', 'datasets', 'peers', 'fl', 'smpc']);
export type EventTopic = z.infer<typeof EventTopic>;
/**
 * What a subscribe without topics gets: not `fl`, whose events a client built before it would not
 * know (its event schema would refuse them and end the stream). FL views ask for `fl` by name; nor
 * `smpc` (encrypted models a node holds a share of), for the same reason.
 */
export const DEFAULT_EVENT_TOPICS: readonly EventTopic[] = ['models', 'datasets', 'peers'];

export const NodeEvent = z.discriminatedUnion('event', [
  z.object({ event: z.literal('model-added'), model: ModelInfo }),
  /** `version` set: that version went (others may remain); absent: the whole model went. */
  z.object({ event: z.literal('model-removed'), model_id: z.string(), version: z.string().optional() }),
  /** A model's metadata changed (its permissions); `model` is the whole new record. */
  z.object({ event: z.literal('model-updated'), model: ModelInfo }),
  z.object({ event: z.literal('dataset-added'), dataset: DatasetInfo }),
  z.object({ event: z.literal('peer-connected'), peer: PeerInfo }),
  z.object({ event: z.literal('peer-disconnected'), peer: PeerInfo }),
  /** An FL process was hosted, took a worker, got a report or closed a cycle; `process` is its whole status. */
  /** This node now holds a share of an encrypted model (docs/smpc.md); topic `smpc`, to signed-in sessions. */
  z.object({ event: z.literal('smpc-model-added'), model: SmpcModelInfo }),
  /** This node's share of an encrypted model was deleted. */
  z.object({ event: z.literal('smpc-model-removed'), model_id: z.string() }),
  z.object({ event: z.literal('fl-process-updated'), process: FlProcessInfo }),
  /** The node's word on a worker's cycle-request (accepted, or rejected with the reason) or its report. */
  z.object({
    event: z.literal('fl-worker'), process_id: z.number(), cycle: z.number().nullable(), worker_id: z.string(),
    status: z.enum(['accepted', 'rejected', 'reported']), reason: z.string().optional(),
  }),
]);
export type NodeEvent = z.infer<typeof NodeEvent>;

/** Which topic an event belongs to. */
export function topicOf(ev: NodeEvent): EventTopic {
  return ev.event.startsWith('model') ? 'models' : ev.event.startsWith('dataset') ? 'datasets' : ev.event.startsWith('fl-') ? 'fl' : ev.event.startsWith('smpc-') ? 'smpc' : 'peers';
}

// client → node: node events on the topics, until cancelled; re-subscribed after a reconnect.
export const Subscribe = defineStream('subscribe', {
  request: z.object({ topics: z.array(EventTopic).min(1).max(4).optional() }).strict(),
  event: NodeEvent,
  end: z.object({}).passthrough(),
});
