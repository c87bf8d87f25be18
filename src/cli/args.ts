// Option parsers shared by the `grid` commands: a user's mistake in a flag is INVALID_INPUT naming it.

import * as fs from 'node:fs';
import { gridError } from '../core/errors';

export const num = (v: string): number => {
  const n = Number(v);
  if (!Number.isFinite(n)) throw gridError('INVALID_INPUT', `${JSON.stringify(v)} is not a number`);
  return n;
};

export const int = (v: string): number => {
  const n = num(v);
  if (!Number.isInteger(n)) throw gridError('INVALID_INPUT', `${JSON.stringify(v)} is not an integer`);
  return n;
};

/** `--client-config '{"lr": 0.1}'` or `--client-config cfg.json`. */
export function jsonArg(flag: string, v: string | undefined): Record<string, unknown> | undefined {
  if (v === undefined) return undefined;
  const text = v.trimStart().startsWith('{') ? v : fs.existsSync(v) ? fs.readFileSync(v, 'utf8') : undefined;
  if (text === undefined) throw gridError('INVALID_INPUT', `${flag}: ${JSON.stringify(v)} is neither a JSON object nor a file`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw gridError('INVALID_INPUT', `${flag}: not JSON (${(err as Error).message})`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw gridError('INVALID_INPUT', `${flag} must be a JSON object`);
  return parsed as Record<string, unknown>;
}
