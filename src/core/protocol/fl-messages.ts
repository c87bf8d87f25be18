// Model-centric federated learning: PyGrid's message types and fields (reference §1.3), so syft.js,
// KotlinSyft, SwiftSyft and PySyft workers and hosts speak to our node unchanged. The schemas are
// lenient where PyGrid clients differ (numbers or strings, optional versions, extra keys); the node
// checks values itself so that refusals carry PyGrid's own strings. Error replies carry our coded
// `error` and, in `data`, PyGrid's `{error, status: "rejected"}` (src/node/fl/handlers.ts).

import { z } from 'zod';
import { defineRequest, DownloadOffer } from './catalogue';
import { JsonText } from './text-bytes';

/** A blob as PyGrid hosts send it (hex, or base64), or per `receive_operations_as` variant. */
const Blob = z.union([z.string(), z.record(z.string(), z.string())]);
const Text = z.string().max(1024);
const OptText = z.string().max(1024).nullish();

// host → node (a signed-in user): start an FL process. `model` is a syft-proto State (hex/base64) or an
// ONNX model; an ONNX model may instead come as the frame's binary attachment, an upload, or a model
// already hosted on the node (`model_ref`, its owner or an admin), whose next versions the checkpoints become.
export const FlHostTraining = defineRequest('model-centric/host-training', {
  request: z.object({
    model: z.string().optional(),
    model_transfer_id: z.string().max(64).optional(),
    /** A hosted ONNX model (`name` or `name@N`, ours): trained as this process; each checkpoint becomes its next version. */
    model_ref: z.string().max(256).optional(),
    plans: z.record(z.string(), Blob).optional(),
    protocols: z.record(z.string(), Blob).optional(),
    averaging_plan: z.string().nullish(),
    client_config: z.record(z.string(), z.unknown()),
    server_config: z.record(z.string(), z.unknown()).optional(),
  }).passthrough(),
  reply: z.object({ status: z.literal('success'), model_id: z.number(), name: z.string(), version: z.string() }).passthrough(),
});

// worker → node: join a process; the node answers with a worker id.
export const FlAuthenticate = defineRequest('model-centric/authenticate', {
  request: z.object({ auth_token: z.string().max(16 * 1024).nullish(), model_name: Text, model_version: OptText }).passthrough(),
  reply: z.object({ status: z.literal('success'), worker_id: z.string(), requires_speed_test: z.boolean() }).passthrough(),
});

// worker → node: ask for a place in the current cycle. Accepted: a request key and what to download.
export const FlCycleRequest = defineRequest('model-centric/cycle-request', {
  request: z.object({ worker_id: Text, model: Text, version: OptText, ping: z.unknown().optional(), download: z.unknown().optional(), upload: z.unknown().optional() }).passthrough(),
  reply: z.union([
    z.object({
      status: z.literal('accepted'), request_key: z.string(), version: z.string(), model: z.string(),
      plans: z.record(z.string(), z.number()), protocols: z.record(z.string(), z.number()),
      client_config: z.record(z.string(), z.unknown()), model_id: z.number(),
    }).passthrough(),
    z.object({ status: z.literal('rejected'), reason: z.string(), timeout: z.string().optional() }).passthrough(),
  ]),
});

/**
 * A string, or on the node the bytes of one as they stood in the frame (textBytes): a report's diff is
 * most of its frame, decoded from bytes without becoming a JS string. Refused as z.string() words it.
 */
const stringMessage = (input: unknown): string => z.string().safeParse(input).error?.issues[0]?.message ?? 'Invalid input: expected string';
const TextOrBytes = z.custom<string | JsonText>((v) => typeof v === 'string' || v instanceof JsonText, { error: (iss) => stringMessage(iss.input) });

// worker → node: the trained diff (old − new) as a base64 State. `num_samples` (ours): the FedAvg weight.
export const FlReport = defineRequest('model-centric/report', {
  request: z.object({ worker_id: Text, request_key: Text, diff: TextOrBytes, num_samples: z.number().optional() }).passthrough(),
  reply: z.object({ status: z.literal('success') }).passthrough(),
  idempotent: true,
  textBytes: 'diff',
});

// Ours (not PyGrid's): what the CLI (`grid fl status`, `grid fl checkpoint`) and the extension's tree read.

export const FlCheckpointInfo = z.object({
  number: z.number(), alias: z.string(), created: z.string(), reports: z.number(), cycle: z.number().nullable(),
  /** For a process hosted from a model (`model_ref`): the model version this checkpoint is (`name@N`), once stored. */
  model: z.string().nullable().optional(),
});

export const FlProcessInfo = z.object({
  model_id: z.number(),
  name: z.string(),
  version: z.string(),
  owner: z.string(),
  /** `state` (a syft-proto State) or `onnx`. */
  format: z.enum(['state', 'onnx']),
  params: z.array(z.object({ name: z.string(), dims: z.array(z.number()) })),
  client_config: z.record(z.string(), z.unknown()),
  /** Without secrets: `authentication` shows only which checks are set. */
  server_config: z.record(z.string(), z.unknown()),
  created: z.string(),
  /** The hosted model whose versions the checkpoints become, if any. */
  linked_model: z.string().nullable().optional(),
  /** How a cycle close averages: `fedavg` (weighted by samples) or `plan` (the host's ONNX averaging plan). */
  averaging: z.enum(['fedavg', 'plan']).optional(),
  completed_cycles: z.number(),
  /** The open cycle, or null when the process is done. ISO 8601 times; `end` null without cycle_length. */
  cycle: z.object({ sequence: z.number(), start: z.string(), end: z.string().nullable(), assigned: z.number(), reported: z.number() }).nullable(),
  workers: z.number(),
  checkpoints: z.array(FlCheckpointInfo),
});
export type FlProcessInfo = z.infer<typeof FlProcessInfo>;

// client → node: every FL process with its cycle and checkpoints.
export const FlListProcesses = defineRequest('fl-list-processes', {
  request: z.object({}).optional(),
  reply: z.object({ processes: z.array(FlProcessInfo) }),
  idempotent: true,
});

// client → node (the process's owner or an admin): a checkpoint's bytes as a download.
export const FlDownloadCheckpoint = defineRequest('fl-download-checkpoint', {
  request: z.object({ name: Text, version: Text.optional(), checkpoint: z.union([z.number().int().positive(), Text]).optional() }).strict(),
  reply: z.object({ model_id: z.number(), name: z.string(), version: z.string(), number: z.number(), format: z.enum(['state', 'onnx']), download: DownloadOffer }),
  idempotent: true,
});
