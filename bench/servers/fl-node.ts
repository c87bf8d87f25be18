// The grid node of bench/fl-cycle.ts, in its own process so its RSS is its own: a fresh data dir, an
// admin to host the FL process. Prints `listening on ws://…`; SIGTERM closes it and removes the dir;
// SIGUSR2 prints its GC pauses (gc-meter.ts).

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { GridNode } from '../../src/node/server';
import { meterGc } from './gc-meter';

meterGc();

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-fl-node-'));
void GridNode.start({ port: 0, adminPassword: process.argv[2] ?? 'bench-admin-password', processMetrics: false, name: 'bench-fl', dataDir: dir,
  // Every simulated worker comes from 127.0.0.1: the per-address bound on authenticate + cycle-request
  // (600 a minute) is for real workers on their own addresses, not for a thousand on one loopback.
  fl: { requestsPerMinute: 1_000_000 } }).then((node) => {
  process.stdout.write(`listening on ${node.url}\n`);
  process.on('SIGTERM', () => {
    void node.close().finally(() => {
      fs.rmSync(dir, { recursive: true, force: true });
      process.exit(0);
    });
  });
});
