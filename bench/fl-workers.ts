// The parent side of bench/servers/fl-clients.ts: lightweight FL workers in `threads` worker threads,
// spread round-robin over the given node URLs (one node, or the replicas of one). Used by
// bench/fl-cycle.ts and bench/replicas.ts; runs bundled (scripts/bench.mjs), next to servers/fl-clients.js.

import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import type { ClientsCmd, ClientsInit, ClientsMsg } from './servers/fl-clients';

export interface FlWorkersOptions {
  urls: string[];
  workers: number;
  threads: number;
  /** Requests in flight per thread. */
  window: number;
  /** The report's diff, base64 of a State, as PyGrid workers send it. */
  diffB64: string;
  /** Against a raw ws sink: connect only, and send report-sized frames. */
  baseline: boolean;
  name?: string;
  version?: string;
  /** Each worker from its own loopback address (see ClientsInit.spreadAddresses). */
  spreadAddresses?: boolean;
}

export interface FlReports {
  ok: number;
  failed: number;
  /** First report sent to last reply, over all threads. */
  seconds: number;
  bytes: number;
}

export class FlWorkers {
  private readonly threads: Worker[];
  private readonly workers: number;

  constructor(o: FlWorkersOptions) {
    this.workers = o.workers;
    let first = 0;
    this.threads = Array.from({ length: o.threads }, (_, t) => {
      const workers = Math.floor(o.workers / o.threads) + (t < o.workers % o.threads ? 1 : 0);
      const init: ClientsInit = {
        urls: o.urls, first, workers, window: o.window, name: o.name ?? '', version: o.version ?? '',
        diffB64: o.diffB64, baseline: o.baseline, spreadAddresses: o.spreadAddresses ?? false,
      };
      first += workers;
      return new Worker(join(__dirname, 'servers', 'fl-clients.js'), { workerData: init });
    });
  }

  private all<T extends ClientsMsg['type']>(cmd: ClientsCmd, reply: T): Promise<Extract<ClientsMsg, { type: T }>[]> {
    return Promise.all(this.threads.map((w) => replyOf<ClientsMsg, T>(w, reply, cmd)));
  }

  /** Connects every worker, then authenticate + cycle-request; how many were accepted into the cycle. */
  async join(): Promise<number> {
    const r = await this.all({ type: 'join' }, 'joined');
    const errors = r.flatMap((x) => x.errors);
    if (errors.length > 0) console.error(`  join errors: ${errors.join(' | ')}`);
    return r.reduce((a, x) => a + x.accepted, 0);
  }

  /** Every worker sends one report (`window` in flight per thread). */
  async report(): Promise<FlReports> {
    const r = await this.all({ type: 'report' }, 'reported');
    const errors = r.flatMap((x) => x.errors);
    if (errors.length > 0) console.error(`  report errors: ${errors.join(' | ')}`);
    const ok = r.reduce((a, x) => a + x.ok, 0);
    return {
      ok,
      failed: this.workers - ok,
      seconds: (Math.max(...r.map((x) => x.lastReply)) - Math.min(...r.map((x) => x.firstSend))) / 1000,
      bytes: r.reduce((a, x) => a + x.bytes, 0),
    };
  }

  async stop(): Promise<void> {
    await Promise.all(this.threads.map((w) => new Promise((resolve) => { w.once('exit', resolve); w.postMessage({ type: 'stop' } satisfies ClientsCmd); })));
  }
}

/** The first message of type `reply` from worker thread `w` (after posting `cmd`, if any); rejects on its error. */
export function replyOf<M extends { type: string }, T extends M['type']>(w: Worker, reply: T, cmd?: unknown): Promise<Extract<M, { type: T }>> {
  return new Promise((resolve, reject) => {
    const on = (m: M) => {
      if (m.type !== reply) return;
      w.off('message', on);
      w.off('error', reject);
      resolve(m as Extract<M, { type: T }>);
    };
    w.on('message', on);
    w.once('error', reject);
    if (cmd !== undefined) w.postMessage(cmd);
  });
}
