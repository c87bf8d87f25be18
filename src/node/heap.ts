// The V8 heap's growth on a grid node. V8 sizes the old generation's next full-GC limit from its live
// heap times a growing factor it derives from how fast marking is against how fast the program fills
// the old generation; and it counts external memory (ArrayBuffers: every WebSocket frame, every socket
// read) allocated since the last full GC against that limit. A node's heap is small and cheap to mark
// (~23 MB), so V8 picks a factor near 1.3 and leaves ~8 MB of room: at 1000 FL workers, the half-megabyte
// report frames in flight cross it every ~30 reports and each crossing starts a full GC from a timed task
// (`--trace-gc`: "finalize incremental marking via task", started as "(task)" by
// `--trace-incremental-marking`) that frees next to nothing, 30 of them for 1000 reports against a raw
// ws sink's 9. A fixed factor leaves room for the frames in flight; the heap stays what its live data is.

import * as v8 from 'node:v8';

/** Old-generation limit = live heap × (1 + this/100) (+ the young generation), whatever marking speed says. */
export const HEAP_GROWING_PERCENT = 300;

let tuned = false;

/**
 * Fixes V8's heap growing factor for this process (once; not when the process was started with its own
 * `--heap-growing-percent`, in its arguments or NODE_OPTIONS). Called by GridNode.start: a node process.
 */
export function tuneHeapGrowth(percent = HEAP_GROWING_PERCENT): void {
  if (tuned) return;
  tuned = true;
  const given = [...process.execArgv, process.env.NODE_OPTIONS ?? ''].some((a) => /heap[-_]growing[-_]percent/.test(a));
  if (!given) v8.setFlagsFromString(`--heap-growing-percent=${percent}`);
}
