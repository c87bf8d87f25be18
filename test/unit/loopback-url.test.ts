// Which node addresses get an all-zero WebSocket masking key (grid-socket.ts): only this machine's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isLocalUrl } from '../../src/core/shm';

test('node addresses on this machine are loopback: 127.x.x.x, localhost, [::1]', () => {
  for (const url of ['ws://127.0.0.1:5000', 'ws://127.1.2.3:1/path', 'wss://localhost:443', 'ws://[::1]:8080']) assert.ok(isLocalUrl(url), url);
});

test('other addresses keep random masking keys, including names that only start like loopback', () => {
  for (const url of ['ws://10.0.0.1:5000', 'ws://127.0.0.1.example.com:5000', 'wss://grid.example.org', 'ws://[::2]:1', 'ws://localhost.evil:1', 'not a url']) {
    assert.equal(isLocalUrl(url), false, url);
  }
});
