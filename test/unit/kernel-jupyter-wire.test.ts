// The Jupyter wire format from raw frames: signing as jupyter_client signs (HMAC-SHA256 over the four
// JSON frames, hex), rejecting what a forger or a broken peer sends, and the kernel's introspection.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { complete, inspect } from '../../src/kernel/introspect';
import { toErrorContent, toJupyterData } from '../../src/kernel/jupyter/outputs';
import { decode, encode, makeHeader, MessageSigner, readConnectionFile } from '../../src/kernel/jupyter/wire';
import { kernelSpec, kernelsDir } from '../../src/cli/kernel';

const KEY = 'a0436f6c-1916-498b-8eb9-e81ab9368e84';

/** A request as jupyter_client's Session.serialize builds it. */
function frames(key: string, content: Record<string, unknown> = { code: '1' }): Buffer[] {
  const parts = [
    { msg_id: 'm1', session: 's1', username: 'u', date: '2026-01-01T00:00:00Z', msg_type: 'execute_request', version: '5.3' },
    {}, {}, content,
  ].map((p) => Buffer.from(JSON.stringify(p)));
  const hmac = createHmac('sha256', key);
  for (const p of parts) hmac.update(p);
  return [Buffer.from('client-id'), Buffer.from('<IDS|MSG>'), Buffer.from(hmac.digest('hex')), ...parts];
}

test('decode accepts a message signed with the connection key and keeps its routing id', () => {
  const r = decode(frames(KEY), new MessageSigner('hmac-sha256', KEY));
  assert.ok(r.ok);
  assert.equal(r.message.header.msg_type, 'execute_request');
  assert.deepEqual(r.message.identities.map(String), ['client-id']);
  assert.deepEqual(r.message.content, { code: '1' });
});

test('decode rejects a wrong key, a tampered content frame, and a missing delimiter', () => {
  const signer = new MessageSigner('hmac-sha256', KEY);
  assert.deepEqual(decode(frames('wrong'), signer), { ok: false, reason: 'bad signature' });
  const tampered = frames(KEY);
  tampered[6] = Buffer.from(JSON.stringify({ code: 'process.exit()' }));
  assert.deepEqual(decode(tampered, signer), { ok: false, reason: 'bad signature' });
  assert.equal(decode(frames(KEY).filter((f) => String(f) !== '<IDS|MSG>'), signer).ok, false);
  assert.equal(decode(frames(KEY).slice(0, 5), signer).ok, false);
});

test('an empty key means unsigned messages (Jupyter\'s rule); an unknown scheme is refused', () => {
  const unsigned = new MessageSigner('hmac-sha256', '');
  assert.equal(decode(frames(KEY), unsigned).ok, true);
  assert.throws(() => new MessageSigner('rsa-sha1', KEY), /GRID_ERR_INVALID_INPUT|unsupported Jupyter signature scheme/);
});

test('encode signs what decode verifies, parent header included', () => {
  const signer = new MessageSigner('hmac-sha256', KEY);
  const parent = makeHeader('execute_request', 'client');
  const out = encode({ identities: [Buffer.from('id')], header: makeHeader('execute_reply', 'kernel'), parent_header: parent, metadata: {}, content: { status: 'ok' } }, signer);
  const back = decode(out, signer);
  assert.ok(back.ok);
  assert.deepEqual(back.message.parent_header, parent);
  assert.equal(decode(out, new MessageSigner('hmac-sha256', 'other')).ok, false);
});

test('readConnectionFile reads the ports and key, and names what is missing', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grid-conn-'));
  try {
    const file = path.join(dir, 'kernel.json');
    fs.writeFileSync(file, JSON.stringify({ shell_port: 1, iopub_port: 2, stdin_port: 3, control_port: 4, hb_port: 5, ip: '127.0.0.1', key: KEY, transport: 'tcp', signature_scheme: 'hmac-sha256' }));
    assert.equal(readConnectionFile(file).control_port, 4);
    fs.writeFileSync(file, JSON.stringify({ shell_port: 1 }));
    assert.throws(() => readConnectionFile(file), /has no iopub_port/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('outputs: PNG bytes go base64, JSON mimes as values, metrics get an HTML fallback, errors keep their code', () => {
  const data = toJupyterData({ 'image/png': new Uint8Array([137, 80, 78, 71]), 'application/json': '{"a":1}', 'text/plain': 'x' });
  assert.deepEqual(data, { 'image/png': 'iVBORw==', 'application/json': { a: 1 }, 'text/plain': 'x' });
  const metrics = toJupyterData({ 'application/vnd.grid.metrics+json': JSON.stringify({ title: 't', series: [{ name: 'train', points: [{ x: 1, loss: 0.5, accuracy: 0.5 }] }] }) });
  assert.match(metrics['text/html'] as string, /<svg/);
  assert.deepEqual(toErrorContent({ name: 'GridError', message: 'm', stack: 'GridError: m\n    at Cell [1]:1:1', code: 'GRID_ERR_NOT_FOUND' }),
    { ename: 'GridError [GRID_ERR_NOT_FOUND]', evalue: 'm', traceback: ['GridError: m', '    at Cell [1]:1:1'] });
});

test('complete: members of a dotted path and globals, never through a getter; inspect describes values', () => {
  let touched = false;
  const scope = {
    grid: { models() {}, modelInfo: 1 },
    myVariable: 41,
    get trap() { touched = true; return { secret: 1 }; },
  };
  assert.deepEqual(complete('grid.mo', 7, scope), { matches: ['modelInfo', 'models'], start: 5, end: 7 });
  assert.ok(complete('myV', 3, scope).matches.includes('myVariable'));
  assert.ok(complete('cons', 4, scope).matches.includes('const'), 'keywords');
  assert.deepEqual(complete('trap.s', 6, scope).matches, []);
  assert.equal(inspect('trap', 4, scope), undefined);
  assert.equal(touched, false, 'a getter ran');
  assert.deepEqual(inspect('myVariable + 1', 3, scope), { 'text/plain': 'myVariable: number\n41' });
  assert.match(inspect('grid.models', 11, scope)!['text/plain'] as string, /^grid\.models: function\nmodels\(\)/);
});

test('the kernelspec runs the built kernel with interrupt_mode message; --prefix and JUPYTER_DATA_DIR pick the folder', () => {
  const spec = kernelSpec('/x/dist/grid-kernel.js', '/usr/bin/node');
  assert.deepEqual(spec.argv, ['/usr/bin/node', '/x/dist/grid-kernel.js', '{connection_file}']);
  assert.equal(spec.interrupt_mode, 'message');
  assert.equal(kernelsDir({ prefix: '/opt/env' }), path.join('/opt/env', 'share', 'jupyter', 'kernels'));
  assert.equal(kernelsDir({}, { JUPYTER_DATA_DIR: '/tmp/jd' }), path.join('/tmp/jd', 'kernels'));
  assert.throws(() => kernelsDir({ user: true, prefix: '/p' }), /choose one of --user, --sys-prefix and --prefix/);
});
