// The JSON bound of both frame kinds, checked from raw bytes before parsing, and the log rate limit.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ErrorCodes, GridError } from '../../src/core/errors';
import { checkJsonLimits, decodeBinaryFrame, encodeMessageFrame, parseEnvelopeBytes, type JsonLimits } from '../../src/core/protocol/envelope';
import { JsonText } from '../../src/core/protocol/text-bytes';
import { LogLimiter } from '../../src/core/log-limiter';
import type { Logger } from '../../src/core/logger';

const limits: JsonLimits = { maxBytes: 1024, maxDepth: 4, maxContainers: 10 };

function throwsCode(fn: () => unknown, code: string, message: RegExp): void {
  assert.throws(fn, (err: unknown) => err instanceof GridError && err.code === code && message.test(err.message));
}

const check = (text: string) => { const b = Buffer.from(text); checkJsonLimits(b, 0, b.length, limits); };

test('nesting is counted on the bytes up to the limit, and refused one level past it', () => {
  check('{"a":[{"b":[1]}]}');
  throwsCode(() => check('{"a":[{"b":[[1]]}]}'), ErrorCodes.MALFORMED_FRAME, /nested deeper than this node's limit of 4 levels/);
  // Siblings do not add up: depth returns as containers close.
  check('[[[1]],[[2]],[[3]]]');
});

test('brackets inside strings, escaped quotes included, are text and not nesting', () => {
  check('{"a":"[[[[[[{{{{{"}');
  check('{"a":"\\"[[[[[[","b":"\\\\"}');
  check('{"a":"\u00e9[[[[[[\u4e2d"}');
  // An escaped backslash ends before the closing quote: the brackets after it are structure again.
  throwsCode(() => check('{"a":"\\\\",[[[[[1]]]]]}'), ErrorCodes.MALFORMED_FRAME, /nested/);
});

/** The byte-at-a-time scan checkJsonLimits replaced, as the reference for what it must decide. */
function referenceVerdict(b: Uint8Array): string {
  let depth = 0, containers = 0, inString = false;
  for (let i = 0; i < b.length; i++) {
    const c = b[i];
    if (inString) {
      if (c === 0x5c) i++;
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limits.maxDepth) return 'depth';
      if (++containers > limits.maxContainers) return 'containers';
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return 'ok';
}

test('skipping strings natively decides exactly as a byte-by-byte scan, escapes and unterminated strings included', () => {
  let seed = 7;
  const rand = (n: number) => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed % n; };
  const alphabet = ['"', '\\', '[', '[', '{', ']', '}', 'a', ','];
  const verdicts = new Set<string>();
  for (let round = 0; round < 20_000; round++) {
    const text = Array.from({ length: 1 + rand(60) }, () => alphabet[rand(alphabet.length)]).join('');
    // Inside a larger buffer, so the bytes around [start, end) must not count.
    const b = Buffer.from(`"[[[[[[${text}"[[[[[[`);
    const start = 7, end = 7 + Buffer.byteLength(text);
    let got = 'ok';
    try { checkJsonLimits(b, start, end, limits); } catch (err) { got = /nested/.test((err as Error).message) ? 'depth' : 'containers'; }
    const want = referenceVerdict(b.subarray(start, end));
    verdicts.add(want);
    assert.equal(got, want, `for ${JSON.stringify(text)}`);
  }
  assert.deepEqual([...verdicts].sort(), ['containers', 'depth', 'ok']);
});

test('more objects and arrays than the limit are refused however flat', () => {
  check(`[${'[],'.repeat(8)}[]]`);
  throwsCode(() => check(`[${'[],'.repeat(9)}[]]`), ErrorCodes.MALFORMED_FRAME, /more than this node's limit of 10 objects and arrays/);
});

test('size is checked first and the error names the limit', () => {
  const big = Buffer.from(`"${'x'.repeat(2000)}"`);
  assert.throws(() => checkJsonLimits(big, 0, big.length, limits), (err: unknown) =>
    err instanceof GridError && err.code === ErrorCodes.PAYLOAD_TOO_LARGE && err.details?.limit === 1024 && /1024-byte limit/.test(err.message));
});

test('a MESSAGE frame is held to the limit from its header, before its JSON is read', () => {
  const frame = encodeMessageFrame({ type: 'ping', request_id: 'r', data: { a: [[[1]]] } }, new Uint8Array(8));
  assert.equal(decodeBinaryFrame(frame).kind, 1);
  throwsCode(() => decodeBinaryFrame(frame, limits), ErrorCodes.MALFORMED_FRAME, /nested deeper/);
  // A header announcing 64 MiB of JSON in a frame of a few bytes: refused for size, not for truncation.
  const lying = Buffer.from(frame);
  lying.writeUInt32LE(64 * 1024 * 1024, 12);
  throwsCode(() => decodeBinaryFrame(lying, limits), ErrorCodes.PAYLOAD_TOO_LARGE, /announces a 67108864-byte JSON envelope/);
  assert.deepEqual(parseEnvelopeBytes(Buffer.from(' {"type":"ping"} '), 1, 16, limits), { type: 'ping' });
});

test('an envelope that is mostly one long string parses exactly as JSON.parse does, whatever the string holds', () => {
  const big: JsonLimits = { maxBytes: 4 * 1024 * 1024, maxDepth: 8, maxContainers: 100 };
  const base64 = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 256)).toString('base64');
  const frames = [
    { type: 'model-centric/report', request_id: 'r1', data: { worker_id: 'w', request_key: 'k', num_samples: 3, diff: base64 } },
    // Escapes, non-ASCII, quotes in the long string: the whole frame is parsed the ordinary way.
    { type: 'report', data: { diff: `${base64}\n"é中` } },
    // The long string inside an array, and a short value that is the stand-in's own text.
    { type: 'host', data: { models: ['short', base64], note: '\u0000\u0000long' } },
    { type: 'host', data: { note: '\u0000\u0000long', other: base64 } },
    // A key "__proto__" holding the long string stays a plain property.
    JSON.parse(`{"type":"proto","data":{"__proto__":"${base64}"}}`) as Record<string, unknown>,
  ];
  for (const env of frames) {
    const text = JSON.stringify(env);
    const bytes = Buffer.from(` ${text} `);
    const parsed = parseEnvelopeBytes(bytes, 1, bytes.length - 1, big);
    assert.deepEqual(parsed, JSON.parse(text));
    assert.equal(JSON.stringify(parsed), text);
  }
  // A frame that is not JSON around its long string is refused with the full parse's words.
  const broken = Buffer.from(`{"type":"x","data":{"diff":"${base64}",}}`);
  throwsCode(() => parseEnvelopeBytes(broken, 0, broken.length, big), ErrorCodes.MALFORMED_FRAME, /frame is not JSON/);
});

test('a report\'s long diff stays the frame\'s bytes (textBytes); anything else about the frame parses as JSON.parse does, refusals included', () => {
  const big: JsonLimits = { maxBytes: 4 * 1024 * 1024, maxDepth: 8, maxContainers: 100 };
  const base64 = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 256)).toString('base64');
  const textBytes = (type: string) => (type === 'model-centric/report' ? 'diff' : undefined);
  const parse = (text: string) => { const b = Buffer.from(text); return parseEnvelopeBytes(b, 0, b.length, big, textBytes); };
  const report = { type: 'model-centric/report', request_id: 'r1', data: { worker_id: 'w', request_key: 'k', diff: base64 } };
  const env = parse(JSON.stringify(report));
  const diff = (env.data as { diff: unknown }).diff;
  assert.ok(diff instanceof JsonText);
  assert.equal(diff.text(), base64);
  assert.equal(JSON.stringify(env), JSON.stringify(report));
  // Elsewhere than data.diff, of another type, or not plain (an escape, a non-ASCII character): a string, as JSON.parse makes it.
  for (const other of [
    { type: 'model-centric/report', data: { worker_id: base64, diff: 'QQ==' } },
    { type: 'model-centric/report', data: { nested: { diff: base64 } } },
    { type: 'model-centric/report', data: [base64] },
    { type: 'model-centric/host-training', data: { diff: base64 } },
    { type: 'model-centric/report', data: { diff: `${base64}\n` } },
    { type: 'model-centric/report', data: { diff: `${base64}é` } },
  ]) {
    const text = JSON.stringify(other);
    assert.deepEqual(parse(text), JSON.parse(text));
  }
  // A raw control character inside the long string is not JSON: refused in JSON.parse's words, as for any frame.
  for (const ctl of ['\n', '\t', '\u0000', '\u001f']) {
    const text = JSON.stringify(report).replace(base64, `${base64.slice(0, 1000)}${ctl}${base64.slice(1000)}`);
    throwsCode(() => parse(text), ErrorCodes.MALFORMED_FRAME, /frame is not JSON/);
  }
});

function collector(): { logger: Logger; lines: { obj: Record<string, unknown>; msg: string }[] } {
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  const at = (obj: object | string, msg?: string) => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }); };
  return { logger: { debug: at, info: at, warn: at, error: at }, lines };
}

test('LogLimiter writes the first lines of a key, counts the rest, and says how many on dispose', () => {
  const { logger, lines } = collector();
  const limiter = new LogLimiter(logger, { burst: 3, intervalMs: 60_000 });
  for (let i = 0; i < 100; i++) limiter.warn('A', { i }, `bad frame ${i}`);
  limiter.warn('B', {}, 'another code');
  assert.deepEqual(lines.map((l) => l.msg), ['bad frame 0', 'bad frame 1', 'bad frame 2', 'another code']);
  limiter.dispose();
  assert.equal(lines.length, 5);
  assert.equal(lines[4]!.obj.suppressed, 97);
  assert.match(lines[4]!.msg, /97 more "A" lines suppressed/);
  limiter.dispose();
  assert.equal(lines.length, 5, 'dispose is idempotent');
});

test('LogLimiter writes the summary when the interval ends though the flood stopped, and a key starts a new interval after it', (t) => {
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
  const lines: { obj: Record<string, unknown>; msg: string }[] = [];
  const at = (obj: object | string, msg?: string) => { lines.push({ obj: obj as Record<string, unknown>, msg: msg ?? '' }); };
  const limiter = new LogLimiter({ debug: at, info: at, warn: at, error: at }, { burst: 2, intervalMs: 30 });
  for (let i = 0; i < 10; i++) limiter.warn('A', { i }, `bad frame ${i}`);
  assert.deepEqual(lines.map((l) => l.msg), ['bad frame 0', 'bad frame 1']);
  t.mock.timers.tick(30);
  assert.equal(lines.length, 3, 'the summary came when the interval ended');
  assert.equal(lines[2]!.obj.suppressed, 8);
  limiter.warn('A', {}, 'after the interval');
  assert.equal(lines.at(-1)!.msg, 'after the interval', 'a new interval writes again');
  assert.equal(lines.length, 4);
  limiter.dispose();
});
