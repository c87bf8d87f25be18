// Peak RSS of this process, sampled every 20 ms, as growth over the level at the last reset.
// Shared by the benchmarks and their server processes; processRss reads another process's.

import { readFileSync } from 'node:fs';

export interface RssSampler {
  /** Starts a new measurement from the current level. */
  reset(): void;
  read(): { rssBase: number; rssPeak: number };
  /** Peak growth since the last reset, and stops sampling. */
  stop(): number;
}

export function rssSampler(): RssSampler {
  // process.memoryUsage.rss(), not process.memoryUsage(): the latter also walks the heap's statistics,
  // which showed as 0.1–0.5 s of a 1 GiB transfer's profile on each side.
  const rss = () => process.memoryUsage.rss();
  let base = rss();
  let peak = base;
  const t = setInterval(() => { peak = Math.max(peak, rss()); }, 20);
  t.unref();
  const read = () => ({ rssBase: base, rssPeak: Math.max(peak, rss()) });
  return {
    reset() { base = rss(); peak = base; },
    read,
    stop() { clearInterval(t); const r = read(); return r.rssPeak - r.rssBase; },
  };
}

/** Current RSS of another process in bytes, from /proc (Linux); NaN where that is not available. */
export function processRss(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch { return NaN; }
}

/** CPU seconds (user + system) another process has used so far, from /proc (Linux); NaN where that is not available. */
export function processCpuSeconds(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces, so split after its closing parenthesis): utime is the 12th, stime the 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLOCK_TICKS;
  } catch { return NaN; }
}

/** Linux's USER_HZ: /proc counts CPU time in hundredths of a second on every architecture Node runs on. */
const CLOCK_TICKS = 100;
