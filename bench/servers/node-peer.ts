// Baseline server for bench/node-inference.ts, in its own process: a raw `ws` endpoint that answers
// each binary frame with a binary frame of a chosen size (the inference round-trip baseline), or sinks
// a bulk transfer and reports its RSS growth (the upload baseline). Prints `listening on ws://…`.

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { rssSampler } from '../rss';

const http = createServer();
const rss = rssSampler();
const wss = new WebSocketServer({ server: http, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
wss.on('connection', (ws) => {
  let replyBytes = Buffer.alloc(0);
  let sink: { total: number; received: number } | undefined;
  ws.on('message', (data, isBinary) => {
    if (!isBinary) {
      const cmd = JSON.parse(String(data)) as { reply?: number; sink?: number };
      if (cmd.reply !== undefined) { replyBytes = Buffer.alloc(cmd.reply, 7); sink = undefined; }
      if (cmd.sink !== undefined) { sink = { total: cmd.sink, received: 0 }; rss.reset(); }
      ws.send('{"ready":true}');
      return;
    }
    const buf = data as Buffer;
    if (sink) {
      sink.received += buf.length;
      if (sink.received >= sink.total) ws.send(JSON.stringify({ received: sink.received, ...rss.read() }));
      return;
    }
    // Touch the request as a server would (it must be read to be used), then answer.
    if (buf.length > 0 && buf[buf.length - 1] === 255) replyBytes[0] = 1;
    ws.send(replyBytes);
  });
});
http.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on ws://127.0.0.1:${(http.address() as AddressInfo).port}\n`);
});
process.on('SIGTERM', () => { wss.close(); http.close(() => process.exit(0)); });
