// Shared memory for local clients (src/core/shm.ts, docs/protocol.md "Shared memory"): a client on the
// node's machine registers a region file once per connection, then run-inference-shm names spans of it
// instead of attaching the tensors. A connection's regions are unregistered (and their files removed by
// the node) when it closes. Each definition says who sends it.

import { z } from 'zod';
import { defineRequest } from './catalogue';
import { RunInferenceReply } from './messages';

/** A region's name: its file's name in the per-user folder (REGION_NAME_PATTERN). */
const RegionName = z.string().regex(/^region-[A-Za-z0-9_-]{16,64}$/);
/** Bytes of a region; the node bounds them further (GridNodeOptions.sharedMemory). */
const Bytes = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** Bytes [offset, offset + length) of a registered region. */
export const RegionSpan = z.object({ offset: Bytes, length: Bytes }).strict();
export type RegionSpan = z.infer<typeof RegionSpan>;

// client → node: open my region file `<per-user folder>/<region>` for this connection. The node refuses
// (GRID_ERR_SHM_UNAVAILABLE) unless the connection comes from the loopback and shared memory is on, and
// refuses the file (GRID_ERR_SHM_REGION_REFUSED) unless it is a regular file (not a symlink) of the
// node's own user, mode 0600, `size` bytes or more within the node's bounds, starting with `nonce`.
export const ShmRegister = defineRequest('shm-register', {
  request: z.object({
    region: RegionName,
    size: Bytes,
    /** 32 random bytes, base64url, which the client wrote at offset 0 of the file. */
    nonce: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  }).strict(),
  reply: z.object({ region: z.string(), size: z.number() }),
  // Not re-sent after a reconnect: the node removed the file when the old connection closed.
  idempotent: false,
});

// client → node: forget a region (the node closes its handle; the client removes the file).
export const ShmUnregister = defineRequest('shm-unregister', {
  request: z.object({ region: RegionName }).strict(),
  reply: z.object({ region: z.string(), unregistered: z.literal(true) }),
  idempotent: true,
});

// client → node: run-inference with the inputs (encodeNamedTensors) at `input` of a registered region.
// With `output`, the node writes the encoded outputs there when they fit and says so in `output`; when
// they do not fit (or no span was given) they come as run-inference's do: an attachment or a download.
export const RunInferenceShm = defineRequest('run-inference-shm', {
  request: z.object({
    model_id: z.string().min(1).max(1024),
    /** Output names to compute; all outputs by default. */
    outputs: z.array(z.string()).max(4096).optional(),
    region: RegionName,
    input: RegionSpan,
    output: RegionSpan.optional(),
  }).strict(),
  reply: RunInferenceReply.extend({
    /** Where in the region the encoded outputs were written (a prefix of the request's `output` span). */
    output: RegionSpan.optional(),
  }),
  // Reading a span and writing another is safe to repeat; a repeat on a new connection gets
  // GRID_ERR_SHM_REGION_NOT_FOUND (its regions went with the old one) and the client falls back.
  idempotent: true,
});
