// The baseline of bench/fl-cycle.ts, in its own process: a raw `ws` endpoint that takes each text frame
// (a report's size) and answers with a small one, as the node answers a report. No parsing, no checks,
// no averaging, no storage: the floor of carrying the same bytes. Prints `listening on ws://…`; SIGUSR2
// prints its GC pauses (gc-meter.ts).

import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import { meterGc } from './gc-meter';

meterGc();

const reply = JSON.stringify({ type: 'model-centric/report', data: { status: 'success' } });
const http = createServer();
const wss = new WebSocketServer({ server: http, maxPayload: 64 * 1024 * 1024, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data: Buffer) => {
    // Touch the frame as a server would (it must be read to be used), then answer.
    if (data.length > 0 && data[data.length - 1] === 0) ws.send('{}');
    else ws.send(reply);
  });
});
http.listen(0, '127.0.0.1', () => process.stdout.write(`listening on ws://127.0.0.1:${(http.address() as AddressInfo).port}\n`));
process.on('SIGTERM', () => {
  for (const c of wss.clients) c.terminate();
  http.close(() => process.exit(0));
});
