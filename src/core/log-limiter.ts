// Rate limit for log lines a remote peer can trigger at will (malformed frames, refused requests):
// per key, the first `burst` lines of an interval are written, the rest only counted, and one summary
// line per interval says how many were suppressed. Without it a client can fill the node's disk and
// drown every other line (60k bad frames wrote 50k warn lines).

import type { Logger } from './logger';

export interface LogLimiterOptions {
  /** Lines written per key and interval before suppression starts. */
  burst?: number;
  intervalMs?: number;
}

type Level = 'debug' | 'info' | 'warn' | 'error';

interface Window {
  level: Level;
  started: number;
  written: number;
  suppressed: number;
  context: object;
}

export class LogLimiter {
  readonly burst: number;
  readonly intervalMs: number;
  private readonly log: Logger;
  private readonly windows = new Map<string, Window>();
  private timer: NodeJS.Timeout | undefined;

  constructor(log: Logger, options: LogLimiterOptions = {}) {
    this.log = log;
    this.burst = options.burst ?? 10;
    this.intervalMs = options.intervalMs ?? 60_000;
  }

  /** Writes `msg` at `level` unless `key` already wrote `burst` lines in this interval. */
  write(level: Level, key: string, obj: object, msg: string): void {
    const now = Date.now();
    let w = this.windows.get(key);
    if (w !== undefined && now - w.started >= this.intervalMs) {
      this.summarize(key, w);
      w = undefined;
    }
    if (w === undefined) {
      w = { level, started: now, written: 0, suppressed: 0, context: obj };
      this.windows.set(key, w);
    }
    if (w.written < this.burst) {
      w.written++;
      this.log[level](obj, msg);
      return;
    }
    w.suppressed++;
    // One timer for the whole limiter, only while something is suppressed: the summary comes even if
    // the flood stops.
    this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(false); }, this.intervalMs);
    this.timer.unref();
  }

  warn(key: string, obj: object, msg: string): void {
    this.write('warn', key, obj, msg);
  }

  /** Writes the summaries due (all of them with `all`, e.g. when the connection closes) and forgets them. */
  flush(all = true): void {
    const now = Date.now();
    for (const [key, w] of this.windows) if (all || now - w.started >= this.intervalMs) this.summarize(key, w);
    if (this.windows.size > 0 && !all) {
      this.timer ??= setTimeout(() => { this.timer = undefined; this.flush(false); }, this.intervalMs);
      this.timer.unref();
    }
  }

  /** Writes what is pending and stops the timer; idempotent. */
  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.flush(true);
  }

  private summarize(key: string, w: Window): void {
    this.windows.delete(key);
    if (w.suppressed > 0) {
      this.log[w.level]({ ...w.context, key, suppressed: w.suppressed, interval_ms: this.intervalMs }, `${w.suppressed} more "${key}" lines suppressed in the last ${Math.round((Date.now() - w.started) / 1000)} s`);
    }
  }
}
