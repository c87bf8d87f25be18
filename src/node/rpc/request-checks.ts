// Hand-written checks of the hottest request's data, in front of its zod schema. A check answers true only
// for data its schema accepts and would hand on unchanged, which the server then uses as it came (a zod
// parse walks its generic machinery and copies the object, on every batch-1 inference); anything else,
// false, goes to the schema, which decides and words the refusal. So a check can only make a request
// cheaper, never let through one the schema refuses: test/unit/node-request-checks.test.ts holds each to
// its schema over the values a frame can carry.

import { RunInference } from '../../core/protocol/messages';

const MAX_ID = 1024;
const MAX_OUTPUTS = 4096;

/** RunInference.request: `{model_id: string (1-1024), outputs?: string[] (≤ 4096)}`, strict. */
function runInference(data: unknown): boolean {
  if (typeof data !== 'object' || data === null || Object.getPrototypeOf(data) !== Object.prototype) return false;
  const d = data as { model_id?: unknown; outputs?: unknown };
  for (const key in d) if (key !== 'model_id' && key !== 'outputs') return false;
  const id = d.model_id;
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_ID) return false;
  const outputs = d.outputs;
  if (outputs === undefined) return true;
  if (!Array.isArray(outputs) || Object.getPrototypeOf(outputs) !== Array.prototype || outputs.length > MAX_OUTPUTS) return false;
  for (let i = 0; i < outputs.length; i++) if (typeof outputs[i] !== 'string') return false;
  return true;
}

/** Message type → its check (see above). Types without one are parsed by their schema alone. */
export const REQUEST_CHECKS: ReadonlyMap<string, (data: unknown) => boolean> = new Map([[RunInference.type, runInference]]);
