// Encrypted inference (two share holders + a crypto provider, all on this machine) against plaintext
// remote inference of the same digits MLP (64-64-10) on one node, measured in the same run: latency per
// query and bytes on the wire per query, batch 1 and 64. Each node is its own process (src/node/main.ts),
// as on three machines.
// Every connection (client→node and node→node)
// goes through a counting TCP proxy, so "bytes" is everything sent both ways, randomness included.
// Goal (issue 15): encrypted ≤ 100× plaintext latency. Usage: npm run bench:smpc [-- --reps 20]
import net from 'node:net';
import { mlp } from '../src/compute/plan';
import { GridClient } from '../src/core/client';
import { inferEncrypted, serveEncrypted } from '../src/federation/smpc';
import * as fs from 'node:fs';
import { ADMIN_PASSWORD, seededFloats, tempDir } from '../test/helpers/node-fixtures';
import { startNodeScript } from '../test/helpers/processes';

const i = process.argv.indexOf('--reps');
const reps = i >= 0 ? Number(process.argv[i + 1]) : 20;

/** A TCP proxy that counts the bytes it forwards both ways. */
async function countingProxy(target: number): Promise<{ port: number; bytes(): number; close(): Promise<void> }> {
  let bytes = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ port: target, host: '127.0.0.1' });
    for (const s of [client, upstream]) { sockets.add(s); s.on('error', () => s.destroy()); }
    client.on('data', (d: Buffer) => { bytes += d.length; });
    upstream.on('data', (d: Buffer) => { bytes += d.length; });
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => bytes,
    close: () => { for (const s of sockets) s.destroy(); return new Promise((r) => server.close(() => r())); },
  };
}

async function main(): Promise<void> {
  const dirs = [0, 1, 2].map(() => tempDir('grid-bench-smpc-'));
  const nodes = await Promise.all(dirs.map((dir, k) => startNodeScript('src/node/main.ts', ['--port', '0', '--data-dir', dir, '--name', `node-${k}`], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD })));
  const proxies = await Promise.all(nodes.map((n) => countingProxy(n.port)));
  const urls = proxies.map((p) => `ws://127.0.0.1:${p.port}`);
  const total = () => proxies.reduce((s, p) => s + p.bytes(), 0);
  const clients = await Promise.all(urls.map((u) => GridClient.connect(u, { credentials: { username: 'admin', password: ADMIN_PASSWORD } })));
  try {
    const model = mlp([64, 64, 10], { seed: 1 });
    await clients[0]!.hostModel(model, { id: 'plain', allowRemoteInference: true });
    await serveEncrypted(model, {
      id: 'enc', holders: [{ client: clients[0]!, url: urls[0]! }, { client: clients[1]!, url: urls[1]! }], provider: { client: clients[2]!, url: urls[2]! },
    });
    const rows: string[] = [];
    for (const batch of [1, 64]) {
      const input = { dtype: 'float32' as const, dims: [batch, 64], data: seededFloats(batch * 64, batch).map((v) => v + 0.5) };
      const plain = () => clients[0]!.runInference('plain', { input });
      const enc = () => inferEncrypted('enc', input, { holders: [clients[0]!, clients[1]!] });
      await plain(); await enc(); await enc(); // warm-up: sessions, links, the provider's pool
      // Interleaved, best of `reps` each (the machine is shared).
      let bestPlain = Infinity, bestEnc = Infinity, bytesPlain = 0, bytesEnc = 0;
      for (let r = 0; r < reps; r++) {
        let b0 = total(), t0 = performance.now();
        await plain();
        bestPlain = Math.min(bestPlain, performance.now() - t0);
        bytesPlain = total() - b0;
        b0 = total(); t0 = performance.now();
        await enc();
        bestEnc = Math.min(bestEnc, performance.now() - t0);
        bytesEnc = total() - b0;
      }
      rows.push(`batch ${String(batch).padStart(2)}: plaintext ${bestPlain.toFixed(2)} ms, ${bytesPlain} B | encrypted ${bestEnc.toFixed(2)} ms, ${(bytesEnc / 1024).toFixed(1)} KiB | latency ${(bestEnc / bestPlain).toFixed(1)}× (goal ≤ 100×), bytes ${(bytesEnc / bytesPlain).toFixed(0)}×`);
    }
    console.log(`digits MLP 64-64-10, best of ${reps}, 3 node processes on 127.0.0.1:\n${rows.join('\n')}`);
  } finally {
    for (const c of clients) c.dispose();
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(nodes.map((n) => n.kill('SIGTERM')));
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  }
}

void main();
