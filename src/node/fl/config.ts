// A process's two configs as PyGrid hosts send them (reference §1.4): `client_config` is the workers'
// (returned verbatim on accept; name + version identify the process), `server_config` the node's. Every
// server_config key PyGrid knew is checked here; unknown keys are kept and ignored, as PyGrid did.

import { gridError } from '../../core/errors';
import { checkFlAuthConfig } from './auth';

export interface ServerConfig {
  /** Seconds from a cycle's start to its end; none: a cycle closes only by count. */
  cycle_length?: number;
  /** Cycles to run; 0 or none: for ever. */
  num_cycles?: number;
  max_diffs?: number;
  min_diffs?: number;
  min_workers?: number;
  max_workers?: number;
  pool_selection?: 'random' | 'iterate';
  do_not_reuse_workers_until_cycle?: number;
  minimum_upload_speed?: number;
  minimum_download_speed?: number;
  iterative_plan?: boolean;
  authentication?: Record<string, unknown>;
  [key: string]: unknown;
}

export interface ClientConfig {
  name: string;
  version: string;
  [key: string]: unknown;
}

const bad = (key: string, why: string) => gridError('INVALID_MESSAGE', `server_config.${key} ${why}`);

function count(cfg: Record<string, unknown>, key: string, min: number): void {
  const v = cfg[key];
  if (v === undefined || v === null) { delete cfg[key]; return; }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw bad(key, `must be a whole number ≥ ${min}, got ${JSON.stringify(v)}`);
}

function positive(cfg: Record<string, unknown>, key: string): void {
  const v = cfg[key];
  if (v === undefined || v === null) { delete cfg[key]; return; }
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) throw bad(key, `must be a number ≥ 0, got ${JSON.stringify(v)}`);
}

/** Longest cycle a timer can hold (setTimeout's bound, ~24 days); longer ones are re-armed, see cycles.ts. */
export const MAX_CYCLE_LENGTH_S = 10 * 365 * 24 * 3600;

export function checkServerConfig(raw: unknown): ServerConfig {
  if (raw === undefined || raw === null) return {};
  if (typeof raw !== 'object' || Array.isArray(raw)) throw gridError('INVALID_MESSAGE', 'server_config must be an object');
  const cfg = { ...(raw as Record<string, unknown>) };
  positive(cfg, 'cycle_length');
  if (cfg.cycle_length !== undefined && ((cfg.cycle_length as number) <= 0 || (cfg.cycle_length as number) > MAX_CYCLE_LENGTH_S)) {
    throw bad('cycle_length', `must be seconds in (0, ${MAX_CYCLE_LENGTH_S}], got ${JSON.stringify(cfg.cycle_length)}`);
  }
  count(cfg, 'num_cycles', 0);
  count(cfg, 'max_diffs', 1);
  count(cfg, 'min_diffs', 1);
  count(cfg, 'min_workers', 1);
  count(cfg, 'max_workers', 1);
  count(cfg, 'do_not_reuse_workers_until_cycle', 0);
  positive(cfg, 'minimum_upload_speed');
  positive(cfg, 'minimum_download_speed');
  if (cfg.pool_selection === undefined || cfg.pool_selection === null) delete cfg.pool_selection;
  else if (cfg.pool_selection !== 'random' && cfg.pool_selection !== 'iterate') throw bad('pool_selection', `must be "random" or "iterate", got ${JSON.stringify(cfg.pool_selection)}`);
  if (cfg.iterative_plan !== undefined && typeof cfg.iterative_plan !== 'boolean') throw bad('iterative_plan', 'must be true or false');
  if (cfg.authentication !== undefined && cfg.authentication !== null && (typeof cfg.authentication !== 'object' || Array.isArray(cfg.authentication))) {
    throw bad('authentication', 'must be an object ({"type": "jwt", "secret" | "pub_key" | "endpoint": …})');
  }
  if (cfg.authentication === null) delete cfg.authentication;
  // A misspelt or unusable key is refused here, naming it, rather than leaving workers unauthenticated.
  if (cfg.authentication !== undefined) {
    const auth = checkFlAuthConfig(cfg.authentication);
    if (auth.secret === undefined && auth.pub_key === undefined && auth.endpoint === undefined) delete cfg.authentication;
    else cfg.authentication = auth as Record<string, unknown>;
  }
  const { min_diffs: minD, max_diffs: maxD, min_workers: minW, max_workers: maxW } = cfg as ServerConfig;
  if (minD !== undefined && maxD !== undefined && minD > maxD) throw bad('min_diffs', `(${minD}) is more than max_diffs (${maxD}): no cycle could ever close`);
  if (minW !== undefined && maxW !== undefined && minW > maxW) throw bad('min_workers', `(${minW}) is more than max_workers (${maxW}): no cycle could ever close`);
  if (minD !== undefined && maxW !== undefined && minD > maxW) throw bad('min_diffs', `(${minD}) is more than max_workers (${maxW}): no cycle could ever close`);
  if (cfg.cycle_length === undefined && maxD === undefined) {
    throw bad('cycle_length', 'or server_config.max_diffs is needed: without either a cycle never closes');
  }
  return cfg as ServerConfig;
}

export function checkClientConfig(raw: unknown): ClientConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw gridError('INVALID_MESSAGE', 'client_config must be an object with "name" and "version"');
  const cfg = raw as Record<string, unknown>;
  for (const key of ['name', 'version'] as const) {
    if (typeof cfg[key] !== 'string' || (cfg[key] as string).length === 0 || (cfg[key] as string).length > 128) {
      throw gridError('INVALID_MESSAGE', `client_config.${key} must be a string of 1-128 characters: name and version identify the FL process`);
    }
  }
  return cfg as ClientConfig;
}

/** PyGrid: a speed test is required when either minimum speed is set. */
export function requiresSpeedTest(cfg: ServerConfig): boolean {
  return cfg.minimum_upload_speed !== undefined || cfg.minimum_download_speed !== undefined;
}

/** What a cycle needs before it may close: max(min_diffs, min_workers), at least 1. */
export function minReports(cfg: ServerConfig): number {
  return Math.max(1, cfg.min_diffs ?? 1, cfg.min_workers ?? 1);
}
