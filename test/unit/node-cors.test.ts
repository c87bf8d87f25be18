// The origin policy as a pure function: what a browser page is told, for every kind of Origin.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { corsHeaders, corsPolicy, normalizeOrigin, originAllowed, preflight, requestOrigin } from '../../src/node/cors';

test('allow-list entries are normalised to what browsers send; anything but an origin is refused', () => {
  assert.equal(normalizeOrigin('https://App.Example:443'), 'https://app.example');
  assert.equal(normalizeOrigin('http://localhost:3000/'), 'http://localhost:3000');
  for (const bad of ['*', 'null', '', 'app.example', 'https://app.example/path', 'https://app.example?x', 'https://u:p@app.example', 'ftp://app.example', 'file:///x']) {
    assert.throws(() => normalizeOrigin(bad), { code: 'GRID_ERR_INVALID_URL' }, bad);
  }
});

test('no Origin (CLI, extension host, workers) is always allowed and gets no CORS headers', () => {
  const policy = corsPolicy();
  assert.equal(originAllowed(undefined, policy), true);
  assert.deepEqual(corsHeaders(undefined, policy), {});
  assert.deepEqual(preflight({}, policy), { status: 204, headers: { allow: 'GET, HEAD, POST, OPTIONS' } });
});

test('by default every page is refused, and nothing ever says *', () => {
  const policy = corsPolicy();
  for (const origin of ['https://evil.example', 'null', 'http://127.0.0.1:5000']) {
    assert.equal(originAllowed(origin, policy), false);
    assert.deepEqual(corsHeaders(origin, policy), { vary: 'Origin' });
    assert.equal(preflight({ origin, 'access-control-request-method': 'POST' }, policy).status, 403);
  }
});

test('an allowed origin is echoed exactly, and its preflight lists methods, headers and max age', () => {
  const policy = corsPolicy(['https://app.example']);
  assert.deepEqual(corsHeaders('https://app.example', policy), { 'access-control-allow-origin': 'https://app.example', vary: 'Origin' });
  assert.equal(originAllowed('https://app.example.evil', policy), false);
  assert.equal(originAllowed('http://app.example', policy), false);
  const p = preflight({ origin: 'https://app.example', 'access-control-request-method': 'POST' }, policy);
  assert.equal(p.status, 204);
  assert.equal(p.headers['access-control-allow-methods'], 'GET, HEAD, POST, OPTIONS');
  assert.equal(p.headers['access-control-allow-headers'], 'content-type, authorization');
  assert.equal(p.headers['access-control-max-age'], '600');
});

test('the handshake origin of WebSocket protocol version 8 counts too', () => {
  assert.equal(requestOrigin({ 'sec-websocket-origin': 'https://evil.example' }), 'https://evil.example');
  assert.equal(requestOrigin({ origin: 'https://a.example', 'sec-websocket-origin': 'https://b.example' }), 'https://a.example');
  assert.equal(requestOrigin({}), undefined);
});
