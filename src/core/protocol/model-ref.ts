// Model references, shared by the node, the client, the CLI and the extension (no schemas here, so the
// extension's light half can import it): `name` is a model's latest version, `name@N` its version N.
// Model versions count 1, 2, 3… per model name (PyGrid's name + version, MLflow's registered model
// versions); `@` is never part of an id, so a ref is unambiguous wherever a model id is accepted.
// The id rule itself lives here too, once, for the node, the client and the extension's input boxes.

const ID = '[A-Za-z0-9._-]{1,128}';

/** Model and dataset ids: safe as file names and URL segments on every platform. */
export const ID_PATTERN = new RegExp(`^${ID}$`);

/** `name` or `name@N`, where the name is an id (ID_PATTERN). */
export const MODEL_REF_PATTERN = new RegExp(`^(${ID})(?:@([1-9][0-9]{0,8}))?$`);

/** `name` → { id }, `name@N` → { id, version: N }; undefined when `ref` is neither. */
export function parseModelRef(ref: string): { id: string; version?: number } | undefined {
  const m = MODEL_REF_PATTERN.exec(ref);
  if (m === null || m[1] === '.' || m[1] === '..') return undefined;
  return m[2] === undefined ? { id: m[1]! } : { id: m[1]!, version: Number(m[2]) };
}

/** The ref naming exactly this version: `name@N`. */
export function modelRef(m: { id: string; version: string }): string {
  return `${m.id}@${m.version}`;
}

/**
 * How to name this version to the node that listed it: `name@N`, or the bare id for a node without
 * versions (its model info has no `versions` count, and it would not understand `@`).
 */
export function refOf(m: { id: string; version: string; versions?: number | undefined }): string {
  return m.versions === undefined ? m.id : modelRef(m);
}
