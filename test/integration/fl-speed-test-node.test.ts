// The speed test as a worker meets it on a real node: a process with a minimum speed asks for one at
// authenticate, a worker reporting too slow a speed is refused with the reason and a fast one accepted, our
// FlJob measures against the node's own /model-centric/speed-test route, and that route serves (ping,
// 64 MiB download, upload) only workers the node authenticated.

import * as http from 'node:http';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FlWorker } from '../../src/core/fl-worker';
import { SPEED_TEST_SAMPLE_BYTES } from '../../src/node/fl/speed-test';
import { startTestNode } from '../helpers/node-fixtures';
import { hostProcess, httpBase, PyGridSocket } from '../helpers/fl-fixtures';

const MiB = 1024 * 1024;

/** One request with `agent: false`; the body is counted, not kept. */
function request(method: string, url: string, upload?: number): Promise<{ status: number; headers: http.IncomingHttpHeaders; bytes: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, ...(upload !== undefined && { headers: { 'content-length': upload } }) }, (res) => {
      let bytes = 0;
      let head = '';
      res.on('data', (c: Buffer) => { bytes += c.length; if (head.length < 4096) head += c.toString('latin1', 0, Math.min(c.length, 4096)); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, text: head }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (upload === undefined) return void req.end();
    const chunk = Buffer.alloc(MiB, 0x61);
    for (let sent = 0; sent < upload; sent += MiB) req.write(chunk.subarray(0, Math.min(MiB, upload - sent)));
    req.end();
  });
}

test('a process with minimum_download_speed: requires_speed_test, too slow is refused with the reason, fast is accepted; FlJob measures on the node', { timeout: 120_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  assert.equal((await hostProcess(admin, { name: 'metered', server: { minimum_download_speed: 10, max_workers: 10 } })).status, 'success');
  assert.equal((await hostProcess(admin, { name: 'open' })).status, 'success');
  assert.equal((await hostProcess(admin, { name: 'lan', server: { minimum_download_speed: 0.001, minimum_upload_speed: 0.001 } })).status, 'success');
  const w = await FlWorker.connect(n.node.url);
  t.after(() => w.dispose());

  assert.equal((await w.authenticate({ modelName: 'open', modelVersion: '1.0' })).requires_speed_test, false);
  const slow = await w.authenticate({ modelName: 'metered', modelVersion: '1.0' });
  assert.equal(slow.requires_speed_test, true);
  const refused = await w.getCycle({ workerId: slow.worker_id, modelName: 'metered', modelVersion: '1.0', speeds: { ping: 5, download: 1, upload: 50 } });
  assert.equal(refused.status, 'rejected');
  assert.equal((refused as { reason: string }).reason, 'download speed 1 is below the minimum of 10');
  // Without speeds while a test is required (a PyGrid-era socket that skipped the test): refused, naming the field.
  const raw = await PyGridSocket.open(n.node.url);
  t.after(() => raw.close());
  const skipped = await raw.call('model-centric/cycle-request', { worker_id: slow.worker_id, model: 'metered', version: '1.0' });
  assert.deepEqual(skipped, { status: 'rejected', error: "'ping' is required" });

  const fast = await w.authenticate({ modelName: 'metered', modelVersion: '1.0' });
  const accepted = await w.getCycle({ workerId: fast.worker_id, modelName: 'metered', modelVersion: '1.0', speeds: { ping: 5, download: 100, upload: 50 } });
  assert.equal(accepted.status, 'accepted');

  // Our FlJob runs the speed test itself against the node's route, then asks with what it measured.
  const job = w.newJob({ modelName: 'lan', modelVersion: '1.0' });
  const outcome = await job.start({ speedTestBytes: 2 * MiB });
  assert.equal(outcome.status, 'accepted', JSON.stringify(outcome));
  assert.ok(job.speeds !== undefined && job.speeds.download > 0.001 && job.speeds.upload > 0.001, JSON.stringify(job.speeds));
});

test('/model-centric/speed-test on the node: ping, a streamed 64 MiB download and a drained upload for a known worker; an unknown worker is refused', { timeout: 120_000 }, async (t) => {
  const n = await startTestNode();
  t.after(() => n.close());
  const admin = await n.admin();
  assert.equal((await hostProcess(admin, { server: { minimum_download_speed: 1 } })).status, 'success');
  const w = await FlWorker.connect(n.node.url);
  t.after(() => w.dispose());
  const { worker_id: workerId } = await w.authenticate({ modelName: 'mnist', modelVersion: '1.0' });
  const route = (id: string, extra = '') => `${httpBase(n.node.url)}/model-centric/speed-test?worker_id=${encodeURIComponent(id)}&random=${Math.random()}${extra}`;

  // syft.js's ping URL, with the `?<random>` it appends.
  const ping = await request('GET', `${route(workerId, '&is_ping=1')}?0.5`);
  assert.equal(ping.status, 200);
  assert.equal(ping.text, '{}');

  const down = await request('GET', route(workerId));
  assert.equal(down.status, 200);
  assert.match(String(down.headers['content-type']), /^multipart\/form-data; boundary=[0-9a-f]{32}$/);
  assert.equal(down.bytes, Number(down.headers['content-length']));
  assert.ok(down.bytes > SPEED_TEST_SAMPLE_BYTES && down.bytes < SPEED_TEST_SAMPLE_BYTES + 1024, `${down.bytes} bytes`);
  assert.match(down.text, /name="sample"/);

  const up = await request('POST', route(workerId), 16 * MiB);
  assert.equal(up.status, 200);
  assert.equal(up.text, '{}');

  for (const [method, extra, upload] of [['GET', '&is_ping=1', undefined], ['GET', '', undefined], ['POST', '', MiB]] as const) {
    const refused = await request(method, route('not-a-worker-of-this-node', extra), upload);
    assert.equal(refused.status, 401, `${method} ${extra}`);
    assert.ok(refused.bytes < 4096, `${refused.bytes} bytes sent to an unknown worker`);
    assert.match(JSON.parse(refused.text).error as string, /not-a-worker|worker/);
  }
});
