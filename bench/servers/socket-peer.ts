// The server half of bench/socket.ts, run as its own process: a raw `ws` echo/sink, a socket.io
// server with acks, or a grid node (GridServer). Prints `listening on ws://127.0.0.1:PORT`.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer } from 'ws';
import { BenchClaim, BenchEcho } from './defs';
import { GridRouter, GridServer } from '../../src/core/rpc/server';

/** Samples RSS so a transfer's peak memory can be reported against the level before it. */
function rssSampler() {
  let base = process.memoryUsage().rss;
  let peak = base;
  const t = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
  t.unref();
  return { reset() { base = process.memoryUsage().rss; peak = base; }, read: () => ({ rssBase: base, rssPeak: Math.max(peak, process.memoryUsage().rss) }) };
}

async function main(): Promise<void> {
  const mode = process.argv[2];
  const http = createServer();
  const rss = rssSampler();
  if (mode === 'ws') {
    const wss = new WebSocketServer({ server: http, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
    wss.on('connection', (ws) => {
      let received = 0;
      ws.on('message', (data, isBinary) => {
        if (!isBinary) {
          const text = data.toString();
          if (text.startsWith('{"sink"')) { received = 0; rss.reset(); ws.send(JSON.stringify({ ready: true })); return; }
          ws.send(text);
          return;
        }
        received += (data as Buffer).length;
        if ((data as Buffer)[0] === 1) ws.send(JSON.stringify({ received, ...rss.read() }));
      });
    });
  } else if (mode === 'socketio') {
    const { Server } = await import('socket.io');
    const io = new Server(http, { transports: ['websocket'], perMessageDeflate: false });
    io.on('connection', (socket) => socket.on('echo', (msg: unknown, ack: (m: unknown) => void) => ack(msg)));
  } else {
    const dir = mkdtempSync(join(tmpdir(), 'bench-node-'));
    const router = new GridRouter()
      .handle(BenchEcho, (d) => d)
      .handle(BenchClaim, async (d, ctx) => {
        const up = ctx.takeUpload(d.transfer_id);
        const { rm } = await import('node:fs/promises');
        await rm(up.path, { force: true });
        const r = rss.read();
        rss.reset();
        return { size: up.size, sha256: up.sha256, ...r };
      });
    const server = new GridServer({ router, uploadsDir: join(dir, 'uploads'), heartbeatMs: 0, maxPayload: 64 * 1024 * 1024 });
    http.on('upgrade', (req, socket, head) => server.handleUpgrade(req, socket, head));
  }
  http.listen(0, '127.0.0.1', () => {
    process.stdout.write(`listening on ws://127.0.0.1:${(http.address() as AddressInfo).port}\n`);
  });
}

void main();
