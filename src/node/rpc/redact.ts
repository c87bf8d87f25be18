// Server file paths never go to clients: they cannot use them, and they tell a stranger about the node's
// disk and user names. Errors from fs and onnxruntime name the file they failed on, so every outgoing error
// message goes through redactPaths; the node logs the original.

import { GridError, toGridError } from '../../core/errors';

/** What a redacted path reads as in a message. */
export const REDACTED_PATH = '<path on the node>';

// An absolute POSIX path of two or more parts, not preceded by what would make it part of a URL
// (`ws://host:5000/a/b`), a ratio (`1/2/3`) or a relative path (`../a/b`).
const POSIX = /(?<![\w:/.~%-])\/[^\s'"`,;:()<>[\]{}|/]+(?:\/[^\s'"`,;:()<>[\]{}|/]*)+/g;
// C:\… or C:/…, and UNC \\server\share….
const WINDOWS = /(?<![\w])(?:[A-Za-z]:[\\/]|\\\\[^\s\\'"]+\\)[^\s'"`,;()<>[\]{}|]*/g;

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * `text` with absolute paths replaced by REDACTED_PATH: first every path under one of `roots` (the data dir,
 * which may hold spaces), then anything else that looks like an absolute path.
 */
export function redactPaths(text: string, roots: readonly string[] = []): string {
  let out = text;
  for (const root of [...roots].filter((r) => r.length > 1).sort((a, b) => b.length - a.length)) {
    const trimmed = root.replace(/[\\/]+$/, '');
    out = out.replace(new RegExp(`${escapeRegExp(trimmed)}(?:[\\\\/][^\\s'"\`,;()<>|]*)?`, 'g'), REDACTED_PATH);
  }
  return out.replace(WINDOWS, REDACTED_PATH).replace(POSIX, REDACTED_PATH);
}

/**
 * The error as it may go to a client: a GridError whose message (and string details) name no path. The
 * original stays the cause, for the node's log. Returns `err` itself when nothing needed redacting.
 */
export function redactError(err: unknown, roots: readonly string[] = []): GridError {
  const e = toGridError(err);
  const message = redactPaths(e.message, roots);
  let details = e.details;
  let changed = message !== e.message;
  if (details !== undefined) {
    const clean: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(details)) {
      const r = typeof v === 'string' ? redactPaths(v, roots) : v;
      if (r !== v) changed = true;
      clean[k] = r;
    }
    details = clean;
  }
  if (!changed) return e;
  return new GridError(e.code, message, details, { cause: err });
}
