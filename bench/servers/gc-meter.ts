// The garbage collector's pauses in a bench server's process, for bench/fl-cycle.ts: summed from the
// process's `gc` performance entries, written to stdout as `gc <ms> <full> <young>` on SIGUSR2
// (gcPauses in bench/fl-cycle.ts asks). Main-thread pauses only: the collector's helper threads are not in it.

import { constants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';

export function meterGc(): void {
  let ms = 0, full = 0, young = 0;
  const count = (entries: readonly PerformanceEntry[]) => {
    for (const e of entries) {
      ms += e.duration;
      const kind = (e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind;
      if (kind === constants.NODE_PERFORMANCE_GC_MAJOR) full++;
      else if (kind === constants.NODE_PERFORMANCE_GC_MINOR) young++;
    }
  };
  const observer = new PerformanceObserver((list) => count(list.getEntries()));
  observer.observe({ entryTypes: ['gc'] });
  process.on('SIGUSR2', () => {
    // Entries still buffered count too.
    count(observer.takeRecords());
    process.stdout.write(`gc ${ms.toFixed(3)} ${full} ${young}\n`);
  });
}
