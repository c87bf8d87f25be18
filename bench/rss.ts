// Peak RSS of this process, sampled every 20 ms, as growth over the level at the last reset.
// Shared by the benchmarks and their server processes; processRss reads another process's.

import { readdirSync, readFileSync } from 'node:fs';

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

/** Nanoseconds each live thread of a process has run, by thread id, from /proc/<pid>/task/<tid>/schedstat (Linux). */
function threadCpuNs(pid: number): Map<number, number> {
  const out = new Map<number, number>();
  let tids: string[];
  try { tids = readdirSync(`/proc/${pid}/task`); } catch { return out; }
  for (const tid of tids) {
    try { out.set(Number(tid), Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0])); } catch { /* the thread ended */ }
  }
  return out;
}

export interface CpuSnapshot { readonly pid: number; readonly threads: Map<number, number>; readonly coarse: number }

/**
 * The CPU a process has used so far, per thread and to the nanosecond: /proc/<pid>/stat counts in 10 ms
 * ticks, too coarse for a few hundred requests of a millisecond each.
 */
export function cpuSnapshot(pid: number): CpuSnapshot {
  return { pid, threads: threadCpuNs(pid), coarse: processCpuSeconds(pid) };
}

/**
 * Seconds of CPU between two snapshots: the whole process, and its main thread (the event loop, which
 * serialises what runs on it). A thread that ended in between took its count with it: the whole
 * process then falls back to the coarse count.
 */
export function cpuSince(a: CpuSnapshot, b: CpuSnapshot = cpuSnapshot(a.pid)): { total: number; main: number } {
  let total = 0;
  let lost = false;
  for (const [tid, ns] of b.threads) total += ns - (a.threads.get(tid) ?? 0);
  for (const tid of a.threads.keys()) if (!b.threads.has(tid)) lost = true;
  const main = ((b.threads.get(a.pid) ?? 0) - (a.threads.get(a.pid) ?? 0)) / 1e9;
  return { total: lost ? b.coarse - a.coarse : total / 1e9, main };
}
