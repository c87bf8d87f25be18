// Share holder 1 learns at once that share holder 0 died mid-query (docs/smpc.md "Limits"): the
// connection party 0 leads the query on closes, and party 1 answers its client with a coded error
// naming that, instead of waiting out its step timeout. Party 0 is its own grid-node process and reaches
// party 1 through a proxy, so the test sees party 1 accept the query (its smpc-join reply) and SIGKILLs
// party 0 right then.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { encode, share } from '../../src/compute/smpc';
import { GridClient } from '../../src/core/client';
import { ErrorCodes, toGridError } from '../../src/core/errors';
import { SmpcInfer } from '../../src/core/protocol/smpc-messages';
import { serveEncrypted } from '../../src/federation/smpc';
import { ADMIN_PASSWORD, startTestNode, tempDir, type TestNode } from '../helpers/node-fixtures';
import { startProxy, type CuttableProxy } from '../helpers/proxy';
import { startNodeScript, type Started } from '../helpers/processes';

const MODEL = join(__dirname, '../../media/samples/digits/digits-mlp.onnx');
/** Far longer than the test may take: an answer before it can only come from the close hook. */
const STEP_TIMEOUT_MS = 120_000;

let holder1: TestNode, provider: TestNode;
let victim: Started;
let proxy: CuttableProxy;
let killed: Promise<void> | undefined;
let armed = false;
const dir = tempDir('grid-smpc-party0-');

before(async () => {
  [holder1, provider] = await Promise.all([startTestNode({ name: 'holder-1', smpc: { stepTimeoutMs: STEP_TIMEOUT_MS } }), startTestNode({ name: 'provider' })]);
  victim = await startNodeScript('src/node/main.ts', ['--port', '0', '--data-dir', dir, '--name', 'party-0'], { ...process.env, GRID_ADMIN_PASSWORD: ADMIN_PASSWORD });
  // Bytes from party 1 to party 0 are unmasked server frames: party 1's reply to smpc-join says it took the query.
  proxy = await startProxy(Number(new URL(holder1.node.url).port), '127.0.0.1', undefined, {
    fromNode: (chunk) => {
      if (armed && killed === undefined && chunk.includes('smpc-join')) killed = victim.kill('SIGKILL');
      return chunk;
    },
  });
});

after(async () => {
  await victim?.kill('SIGKILL');
  await proxy?.close();
  await Promise.all([holder1?.close(), provider?.close()]);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('share holder 1 answers with SMPC_ABORTED naming share holder 0 as soon as it dies, not at the step timeout', async () => {
  const c0 = await GridClient.connect(victim.url, { reconnect: { enabled: false }, credentials: { username: 'admin', password: ADMIN_PASSWORD } });
  const [c1, cp] = await Promise.all([holder1.admin(), provider.admin()]);
  try {
    await serveEncrypted(fs.readFileSync(MODEL), {
      id: 'digits',
      holders: [{ client: c0, url: victim.url }, { client: c1, url: `ws://127.0.0.1:${proxy.port}` }],
      provider: { client: cp, url: provider.node.url },
    });
    // The client's two requests, sent as inferEncrypted sends them, but each answer watched on its own.
    const batch = 64;
    const x = share(encode(Float64Array.from({ length: batch * 64 }, (_, i) => (i % 17) / 16), 'input'));
    const bytes = (a: BigInt64Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const query = { model_id: 'digits', query_id: randomBytes(16).toString('hex'), batch };
    armed = true;
    const p0 = c0.socket.call(SmpcInfer, query, { attachment: bytes(x[0]!), timeout: STEP_TIMEOUT_MS * 2 }).then(() => undefined, toGridError);
    const t0 = performance.now();
    const p1 = await c1.socket.call(SmpcInfer, query, { attachment: bytes(x[1]!), timeout: STEP_TIMEOUT_MS * 2 }).then(() => undefined, toGridError);
    const ms = performance.now() - t0;
    assert.ok(killed !== undefined, 'share holder 0 was killed during the query');
    await killed;
    assert.equal(victim.child.signalCode, 'SIGKILL');
    assert.equal(p1?.code, ErrorCodes.SMPC_ABORTED, `share holder 1 answered ${p1 ? `${p1.code}: ${p1.message}` : 'with an output share'}`);
    assert.match(p1.message, /share holder 0 \(ws:\/\/127\.0\.0\.1:\d+\) disconnected mid-query; no output/);
    assert.ok(ms < STEP_TIMEOUT_MS, `took ${ms} ms`);
    process.stdout.write(`# party 1 answered ${Math.round(ms)} ms after the query was sent (step timeout ${STEP_TIMEOUT_MS} ms)\n`);
    assert.ok((await p0) !== undefined, 'the killed party 0 gave an answer');
  } finally {
    c0.dispose();
  }
});
