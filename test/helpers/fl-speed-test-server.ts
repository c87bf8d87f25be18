// A process whose only route is the real speed-test handler, so a test can watch the memory of the side that
// serves the sample without its own client's garbage in the figure. Prints `listening on http://HOST:PORT`,
// then one JSON line per finished or abandoned response: its RSS when the request arrived, the peak RSS and
// the peak send buffer, sampled each time the handler has written its next piece (after 'drain').

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { handleSpeedTest } from '../../src/node/fl/speed-test';

const worker = process.argv[2] ?? 'worker';
const server = http.createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://node');
  const baseRss = process.memoryUsage().rss;
  let peakRss = baseRss;
  let peakBuffered = 0;
  const sample = (): void => {
    peakRss = Math.max(peakRss, process.memoryUsage().rss);
    peakBuffered = Math.max(peakBuffered, res.writableLength);
  };
  res.on('drain', () => queueMicrotask(sample)); // after the handler has written its next piece
  res.once('close', () => {
    sample();
    process.stdout.write(`${JSON.stringify({ baseRss, peakRss, peakBuffered, finished: res.writableFinished })}\n`);
  });
  handleSpeedTest(req, res, url.searchParams, (id) => id === worker);
  sample();
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`);
});
process.on('disconnect', () => process.exit(0));
