// Reconnect delays: exponential with a cap and ± jitter, so a restarted node is not hit by every
// client at the same instant. Pure, so its sequence is tested without waiting.

export interface ReconnectOptions {
  /** Reconnect after an unexpected close. Default true. */
  enabled?: boolean;
  /** Attempts before giving up; Infinity for unlimited. Default Infinity. */
  maxAttempts?: number;
  /** Delay before the first retry. Default 250 ms. */
  initialDelayMs?: number;
  /** Cap on any one delay. Default 30 s. */
  maxDelayMs?: number;
  /** Growth per attempt. Default 2. */
  factor?: number;
  /** Fraction of the delay added or removed at random, 0..1. Default 0.2. */
  jitter?: number;
}

export type ResolvedReconnect = Required<ReconnectOptions>;

export function resolveReconnect(o: ReconnectOptions = {}): ResolvedReconnect {
  const r: ResolvedReconnect = {
    enabled: o.enabled ?? true,
    maxAttempts: o.maxAttempts ?? Infinity,
    initialDelayMs: o.initialDelayMs ?? 250,
    maxDelayMs: o.maxDelayMs ?? 30_000,
    factor: o.factor ?? 2,
    jitter: o.jitter ?? 0.2,
  };
  if (!(r.maxAttempts >= 0)) throw new RangeError(`reconnect.maxAttempts must be ≥ 0, got ${o.maxAttempts}`);
  if (!(r.initialDelayMs >= 0)) throw new RangeError(`reconnect.initialDelayMs must be ≥ 0, got ${o.initialDelayMs}`);
  if (!(r.maxDelayMs >= r.initialDelayMs)) throw new RangeError(`reconnect.maxDelayMs (${o.maxDelayMs}) must be ≥ initialDelayMs (${r.initialDelayMs})`);
  if (!(r.factor >= 1)) throw new RangeError(`reconnect.factor must be ≥ 1, got ${o.factor}`);
  if (!(r.jitter >= 0 && r.jitter <= 1)) throw new RangeError(`reconnect.jitter must be within 0..1, got ${o.jitter}`);
  return r;
}

/** Delay before reconnect attempt `attempt` (1-based). `random` returns a number in [0, 1). */
export function backoffDelay(attempt: number, o: ResolvedReconnect, random: () => number = Math.random): number {
  const base = Math.min(o.maxDelayMs, o.initialDelayMs * o.factor ** (attempt - 1));
  const spread = base * o.jitter * (2 * random() - 1);
  return Math.max(0, Math.min(o.maxDelayMs, Math.round(base + spread)));
}
