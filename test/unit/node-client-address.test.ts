// Which address a request is from behind reverse proxies: the X-Forwarded-For rule (rightmost entry that is
// not a trusted proxy), read only from a trusted peer, and the --trust-proxy forms (address, CIDR, loopback).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTrustedProxies, resolveClientAddress } from '../../src/node/client-address';

test('the client is the rightmost forwarded address that is not a trusted proxy', () => {
  const trusted = parseTrustedProxies(['10.0.0.0/8, 192.0.2.5']);
  assert.equal(resolveClientAddress('10.1.2.3', '203.0.113.7', trusted), '203.0.113.7');
  // A client that writes its own header gets it prepended to: what it wrote is left of the real hop.
  assert.equal(resolveClientAddress('10.1.2.3', '1.1.1.1, 203.0.113.7', trusted), '203.0.113.7');
  // Chains of trusted proxies are walked through; repeated headers count as one list.
  assert.equal(resolveClientAddress('10.1.2.3', ['198.51.100.4, 203.0.113.7', '192.0.2.5, 10.9.9.9'], trusted), '203.0.113.7');
  // Every hop trusted: the leftmost is the best there is.
  assert.equal(resolveClientAddress('10.1.2.3', '10.0.0.7, 10.0.0.8', trusted), '10.0.0.7');
  // Ports and brackets, as some proxies write them; IPv4-mapped peers.
  assert.equal(resolveClientAddress('::ffff:10.1.2.3', '[2001:db8::1]:443', trusted), '2001:db8::1');
  assert.equal(resolveClientAddress('10.1.2.3', '203.0.113.7:5555', trusted), '203.0.113.7');
  // Junk stops the walk at the last good hop: a client cannot mint new keys by writing garbage.
  assert.equal(resolveClientAddress('10.1.2.3', 'not-an-address', trusted), '10.1.2.3');
  assert.equal(resolveClientAddress('10.1.2.3', 'junk, 10.0.0.9', trusted), '10.0.0.9');
});

test('the header from a peer that is not trusted, or with no proxies trusted, is ignored', () => {
  const trusted = parseTrustedProxies(['10.0.0.0/8']);
  assert.equal(resolveClientAddress('203.0.113.9', '198.51.100.4', trusted), '203.0.113.9');
  assert.equal(resolveClientAddress('127.0.0.1', '198.51.100.4', undefined), '127.0.0.1');
  assert.equal(resolveClientAddress('10.1.2.3', undefined, trusted), '10.1.2.3');
});

test('--trust-proxy forms: exact addresses, CIDR ranges of both families, and loopback', () => {
  const t = parseTrustedProxies(['loopback', '192.0.2.5', 'fd00::/8']);
  assert.deepEqual(t.entries, ['loopback', '192.0.2.5', 'fd00::/8']);
  for (const a of ['127.0.0.1', '127.9.9.9', '::1', '::ffff:127.0.0.1', '192.0.2.5', 'fd12::3']) assert.equal(t.has(a), true, a);
  for (const a of ['192.0.2.6', '10.0.0.1', 'fe80::1', '', 'localhost']) assert.equal(t.has(a), false, a);
  assert.throws(() => parseTrustedProxies(['10.0.0.0/x']), /--trust-proxy "10\.0\.0\.0\/x" is not an address/);
});
