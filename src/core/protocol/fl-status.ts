// Our own read-only view of a node's model-centric FL processes (PyGrid had none): what `grid fl status`
// and the Grid tree show. No secrets: a process's authentication settings appear as their kind only.

import { z } from 'zod';
import { defineRequest } from './catalogue';

const Checkpoint = z.object({ number: z.number(), alias: z.string(), cycle: z.number().nullable(), reports: z.number(), created: z.string() });

export const FlProcessStatus = z.object({
  id: z.number(),
  name: z.string(),
  version: z.string(),
  owner: z.string(),
  /** 'onnx' (ours) or 'state' (a PyGrid host's syft-proto State). */
  format: z.string(),
  created: z.string(),
  client_config: z.record(z.string(), z.unknown()),
  /** server_config with `authentication` replaced by its kind ("secret", "pub_key", "endpoint"). */
  server_config: z.record(z.string(), z.unknown()),
  completed_cycles: z.number(),
  /** The open cycle; null once every cycle of num_cycles has run. */
  cycle: z.object({
    sequence: z.number(), start: z.string(), end: z.string().nullable(), assigned: z.number(), reported: z.number(),
  }).nullable(),
  checkpoints: z.array(Checkpoint),
}).passthrough();
export type FlProcessStatus = z.infer<typeof FlProcessStatus>;

// client → node: the FL processes (all, or those named `name`, optionally one version).
export const FlStatus = defineRequest('fl-status', {
  request: z.object({ name: z.string().max(1024).optional(), version: z.string().max(1024).optional() }).strict().optional(),
  reply: z.object({ processes: z.array(FlProcessStatus) }),
  idempotent: true,
});
