// Checks of a `grid.*` call's arguments that both bridges (the VS Code notebook's and the Jupyter
// kernel's) make the same way, so a cell's mistake reads the same under either front end.

import { gridError, type GridError } from '../core/errors';
import type { PermissionFlags } from '../core/permissions';

export function usage(method: string, what: string): GridError {
  return gridError('INVALID_INPUT', `grid.${method} ${what}`);
}

/** `{ allowDownload?, allowRemoteInference? }` of a call that stores a model; the ones not given are inherited. */
export function permissionFlags(o: Record<string, unknown>, method: string): PermissionFlags {
  const out: PermissionFlags = {};
  for (const name of ['allowDownload', 'allowRemoteInference'] as const) {
    const v = o[name];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') throw usage(method, `expects { ${name} } to be true or false, got ${JSON.stringify(v)}`);
    out[name] = v;
  }
  return out;
}

export function positiveInt(value: unknown, method: string, name: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw usage(method, `expects { ${name} } to be a whole number from 1, got ${String(value)}`);
  return value;
}
