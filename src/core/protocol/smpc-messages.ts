// Encrypted model serving (SMPC, docs/smpc.md): the messages between the model owner's or querying
// client, the two share holders and the crypto provider. Shares, bundles and masked values travel as
// binary attachments (raw little-endian int64 / bytes), never in JSON. Each definition says who sends it.

import { z } from 'zod';
import { defineRequest } from './catalogue';
import { ID_PATTERN } from './model-ref';

const ModelId = z.string().min(1).max(1024);
/** A random 128-bit tag, hex: ties the two halves of one upload (or one query) together. */
const Tag = z.string().regex(/^[0-9a-f]{32}$/);
const Dim = z.number().int().positive().max(1 << 24);
const Count = z.number().int().nonnegative().max(1 << 26);
const ParamIndex = z.number().int().nonnegative().max(1 << 16);

export const SmpcLayer = z.discriminatedUnion('op', [
  z.object({ op: z.literal('linear'), in: Dim, out: Dim, weight: ParamIndex, bias: ParamIndex.optional() }).strict(),
  z.object({ op: z.literal('relu') }).strict(),
  z.object({ op: z.literal('reshape'), shape: z.array(Dim).min(1).max(8) }).strict(),
  z.object({
    op: z.literal('conv'), in: z.array(Dim).length(3), out: Dim, kernel: z.array(Dim).length(2),
    pads: z.array(z.number().int().nonnegative().max(64)).length(4), strides: z.array(Dim).length(2), weight: ParamIndex, bias: ParamIndex.optional(),
  }).strict(),
  z.object({ op: z.enum(['maxpool', 'avgpool']), in: z.array(Dim).length(3), kernel: z.array(Dim).length(2), strides: z.array(Dim).length(2) }).strict(),
]);

/** The public architecture of an encrypted model (compute/smpc/plan.ts builds it from ONNX). */
export const SmpcPlanSchema = z.object({
  input: z.object({ name: z.string().max(256), shape: z.array(Dim).min(1).max(8) }).strict(),
  output: z.object({ name: z.string().max(256), shape: z.array(Dim).min(1).max(8) }).strict(),
  layers: z.array(SmpcLayer).max(256),
  params: z.array(z.object({ name: z.string().max(256), size: Count }).strict()).max(1024),
}).strict();

/** A node named by its id (which it proves, src/node/identity.ts) and the address it is reached at. */
export const SmpcNodeRef = z.object({ id: z.string().regex(ID_PATTERN), address: z.string().min(1).max(2048) }).strict();
export type SmpcNodeRef = z.infer<typeof SmpcNodeRef>;

const Party = z.union([z.literal(0), z.literal(1)]);

export const SmpcStep = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('matmul'), m: Dim, k: Dim, n: Dim, mask: ParamIndex.optional() }).strict(),
  z.object({ kind: z.literal('relu'), n: Dim }).strict(),
]);

export const SmpcModelInfo = z.object({
  model_id: z.string(),
  party: Party,
  pair_tag: Tag,
  /** The other share holder. */
  peer: SmpcNodeRef,
  provider: SmpcNodeRef,
  owner: z.string(),
  input: SmpcPlanSchema.shape.input,
  output: SmpcPlanSchema.shape.output,
  /** ISO 8601. */
  created: z.string(),
});
export type SmpcModelInfo = z.infer<typeof SmpcModelInfo>;

// model owner's client → share holder: keep this party's share of the parameters (the attachment,
// int64 fixed point at scale 2^16, in plan.params order) under model_id.
export const SmpcHostShare = defineRequest('smpc-host-share', {
  request: z.object({
    model_id: ModelId,
    party: Party,
    /** The same random tag on both holders: their shares belong together. */
    pair_tag: Tag,
    /** The same random nonce on both holders: names the masks of this upload's weights at the provider. */
    mask_nonce: Tag,
    plan: SmpcPlanSchema,
    peer: SmpcNodeRef,
    provider: SmpcNodeRef,
  }).strict(),
  reply: z.object({ model: SmpcModelInfo }),
});

// client → share holder: what this node holds of an encrypted model (no share values).
export const SmpcModel = defineRequest('smpc-model', {
  request: z.object({ model_id: ModelId }).strict(),
  reply: z.object({ model: SmpcModelInfo }),
  idempotent: true,
});

// client → share holder: every encrypted model this node holds a share of (no share values); the
// extension's tree marks them with their share holders and provider.
export const SmpcModels = defineRequest('smpc-models', {
  request: z.object({}).strict().optional(),
  reply: z.object({ models: z.array(SmpcModelInfo) }),
  idempotent: true,
});

// querying client → each share holder: evaluate on this party's share of the input (attachment, int64
// [batch, ...input shape]); the reply's attachment is this party's share of the output.
export const SmpcInfer = defineRequest('smpc-infer', {
  request: z.object({ model_id: ModelId, query_id: Tag, batch: z.number().int().positive().max(4096) }).strict(),
  reply: z.object({ model_id: z.string(), query_id: Tag, party: Party, dims: z.array(z.number().int().nonnegative()), duration_ms: z.number() }),
});

// node → node it dialled: a fresh challenge for node-attest on this connection.
export const NodeChallenge = defineRequest('node-challenge', {
  request: z.object({}).strict().optional(),
  reply: z.object({ challenge: z.string().regex(/^[A-Za-z0-9_-]{43}$/) }),
});

// node → node it dialled: proves the dialling node's id on this connection (the reverse of
// prove-identity): signs "grid-node-proof/v1\n<challenge>\n<its id>\n<the dialled node's id>".
export const NodeAttest = defineRequest('node-attest', {
  request: z.object({
    id: z.string().regex(ID_PATTERN),
    public_key: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    signature: z.string().regex(/^[A-Za-z0-9_-]{86}$/),
  }).strict(),
  reply: z.object({ id: z.string() }),
});

// share holder 0 → share holder 1: start evaluating query_id together; the seed is the holders' shared
// randomness (base64url, 32 bytes), never sent to the provider.
export const SmpcJoin = defineRequest('smpc-join', {
  request: z.object({
    model_id: ModelId, query_id: Tag, pair_tag: Tag, bundle_id: Tag, batch: z.number().int().positive().max(4096),
    seed: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
    /** Party 0 has not opened the masked weights yet. */
    open_mask: z.boolean(),
  }).strict(),
  /** Whether this query opens the masked weights first (either holder lacks them); both then do. */
  reply: z.object({ query_id: Tag, open_mask: z.boolean() }),
});

// share holder 0 → share holder 1: this holder's opening for `tag` (attachment); the reply carries the other's.
export const SmpcExchange = defineRequest('smpc-exchange', {
  request: z.object({ query_id: Tag, tag: z.number().int().nonnegative().max(1 << 20) }).strict(),
  reply: z.object({ query_id: Tag, tag: z.number() }),
});

// share holder → crypto provider: this party's half of the correlated randomness for `schedule`
// (attachment of the reply). The provider hands each half once, to the node named for it.
export const SmpcDeal = defineRequest('smpc-deal', {
  request: z.object({
    bundle_id: Tag, party: Party, peer_id: z.string().regex(ID_PATTERN), schedule: z.array(SmpcStep).min(1).max(512),
    /** The upload whose masks the schedule's masked products use. */
    mask_nonce: Tag.optional(),
  }).strict(),
  reply: z.object({ bundle_id: Tag, size: z.number(), pooled: z.boolean() }),
});

// share holder → crypto provider: masked comparison values of `step` (attachment); the reply's
// attachment is this party's ring shares of the answer.
export const SmpcCompare = defineRequest('smpc-compare', {
  request: z.object({ bundle_id: Tag, party: Party, step: z.number().int().nonnegative().max(512) }).strict(),
  reply: z.object({ bundle_id: Tag, step: z.number() }),
});

// share holder → crypto provider: queries with this schedule will come (sent at upload, batch 1): deal
// bundles for it ahead. Nothing is handed out by this message.
export const SmpcPrepare = defineRequest('smpc-prepare', {
  request: z.object({
    schedule: z.array(SmpcStep).min(1).max(512),
    /** For masked products: the upload, and the other holder (the sender is party 0). */
    mask_nonce: Tag.optional(),
    peer_id: z.string().regex(ID_PATTERN).optional(),
  }).strict(),
  reply: z.object({}).strict(),
});

// share holder → crypto provider: this party's shares of the masks of an upload's weights (attachment:
// int64, the weights in the order asked). Derived from the provider's key, so asked again they are the
// same; only the holder named as `party` gets them.
export const SmpcMask = defineRequest('smpc-mask', {
  request: z.object({
    mask_nonce: Tag, party: Party, holders: z.tuple([z.string().regex(ID_PATTERN), z.string().regex(ID_PATTERN)]),
    weights: z.array(z.object({ index: ParamIndex, size: Count }).strict()).min(1).max(256),
  }).strict(),
  reply: z.object({ mask_nonce: Tag }),
});

// client (the model's owner or an admin) → share holder: delete this node's share of an encrypted model
// (the client sends it to both holders). The holder tells the crypto provider to deal no more for it.
export const SmpcDelete = defineRequest('smpc-delete', {
  request: z.object({ model_id: ModelId }).strict(),
  reply: z.object({ model_id: z.string(), deleted: z.literal(true) }),
  // Deleting twice leaves it as once (the second is NOT_FOUND).
  idempotent: true,
});

// querying client → each share holder: stop query_id (the client cancelled it). Answered once this
// holder's part of the query has ended and the randomness reserved for it at the crypto provider is
// released; `cancelled` is false when no such query was running here (it had ended already).
export const SmpcCancel = defineRequest('smpc-cancel', {
  request: z.object({ query_id: Tag }).strict(),
  reply: z.object({ query_id: Tag, cancelled: z.boolean() }),
  idempotent: true,
});

// share holder → crypto provider: the upload's model was deleted: deal no more for it.
export const SmpcForget = defineRequest('smpc-forget', {
  request: z.object({ mask_nonce: Tag }).strict(),
  reply: z.object({ forgotten: z.boolean() }),
  idempotent: true,
});

// share holder → crypto provider: the query this bundle was dealt for ended before using it (cancelled,
// failed): drop it, and stop dealing it if that is still under way.
export const SmpcRelease = defineRequest('smpc-release', {
  request: z.object({ bundle_id: Tag }).strict(),
  reply: z.object({ released: z.boolean() }),
  idempotent: true,
});
