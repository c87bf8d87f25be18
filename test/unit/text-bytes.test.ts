// JSON text read as bytes (src/core/protocol/text-bytes.ts): the strict base64 decoder against Buffer and
// against the node's lenient decodeText, the printable-ASCII and finite checks, each with its WebAssembly
// kernels and with their plain-JS twins; and a syft.js State read off its wire format against protobufjs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { GridError } from '../../src/core/errors';
import { allFiniteBytes, decodeBase64, decodeBase64Transient, firstNonFinite, isPlainAscii, JsonText, textKernelStagedBytes, useTextKernels } from '../../src/core/protocol/text-bytes';
import { decodeState, decodeStateText, decodeText, encodeState, useWireStateWalker } from '../../src/core/protocol/syft-state';

const b = (s: string) => Buffer.from(s, 'latin1');
const decode = (s: string | Buffer) => {
  const out = decodeBase64(typeof s === 'string' ? b(s) : s);
  return out === undefined ? undefined : Buffer.from(out);
};
// A seeded generator: a failure names the seed that shows it again.
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; return (x >>> 0) / 2 ** 32; };
}

for (const kernels of [true, false]) {
  const mode = kernels ? 'WebAssembly SIMD' : 'plain JS';
  const withKernels = (fn: () => void) => () => { useTextKernels(kernels); try { fn(); } finally { useTextKernels(true); } };

  test(`decodeBase64 (${mode}): random bytes of every length to 300, and past the 1 MiB window, come back as Buffer encoded them`, withKernels(() => {
    for (let n = 1; n <= 300; n++) {
      const raw = randomBytes(n);
      assert.deepEqual(decode(raw.toString('base64')), raw, `length ${n}`);
      assert.deepEqual(decode(raw.toString('base64').replace(/=+$/, '')), raw, `length ${n} unpadded`);
    }
    const big = randomBytes(1024 * 1024 + 12345);
    assert.ok(decode(big.toString('base64'))!.equals(big));
    // Into a caller's buffer: a view of it.
    const into = new Uint8Array(1000);
    const out = decodeBase64(b(Buffer.from('hello grid').toString('base64')), into)!;
    assert.equal(out.buffer, into.buffer);
    assert.equal(Buffer.from(out).toString(), 'hello grid');
  }));

  test(`decodeBase64 (${mode}): every byte outside the standard alphabet is refused anywhere (url-safe, '=' inside, controls, non-ASCII)`, withKernels(() => {
    const text = b(randomBytes(120).toString('base64')); // 160 characters, no padding
    const alphabet = b('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/');
    const spaces = b(' \t\n\v\f\r');
    for (let bad = 0; bad < 256; bad++) {
      if (alphabet.includes(bad) || spaces.includes(bad)) continue;
      for (const at of [0, 15, 17, 64, 158]) {
        const t = Buffer.from(text);
        t[at] = bad;
        assert.equal(decode(t), undefined, `byte ${bad} at ${at}`);
      }
    }
    assert.equal(decode(''), undefined);
    assert.equal(decode('   \n'), undefined);
  }));

  test(`decodeBase64 (${mode}): padding to a group of 4 or none; short, extra or misplaced padding is refused; a lone last character too`, withKernels(() => {
    assert.equal(decode('QQ==')!.toString(), 'A');
    assert.equal(decode('QUI=')!.toString(), 'AB');
    assert.equal(decode('QQ')!.toString(), 'A');
    assert.equal(decode('QUI')!.toString(), 'AB');
    for (const bad of ['QQ=', 'QQ===', 'QUI==', 'Q===', '=', '====', 'QQ==QUJD', 'QUI=QUJD', 'QUJDQ', 'Q', 'QUJD=', 'QUJD====']) {
      assert.equal(decode(bad), undefined, bad);
    }
    // Trailing bits that are not zero are ignored, as Buffer ignores them.
    assert.deepEqual(decode('QR=='), Buffer.from('QR==', 'base64'));
  }));

  test(`decodeBase64 (${mode}): ASCII whitespace anywhere is skipped: KotlinSyft's 76-column lines, CRLF, spaces, tabs, padding after a break`, withKernels(() => {
    const raw = randomBytes(1000);
    const text = raw.toString('base64');
    const lines = text.match(/.{1,76}/g)!;
    assert.deepEqual(decode(lines.join('\n') + '\n'), raw);
    assert.deepEqual(decode(lines.join('\r\n')), raw);
    assert.deepEqual(decode(` ${text.split('').join(' ')}\t`), raw);
    assert.deepEqual(decode('QUI\n='), Buffer.from('AB'));
    assert.deepEqual(decode('QQ\r\n=\n= '), Buffer.from('A'));
  }));

  test(`decodeBase64 (${mode}): truncated input decodes its whole groups and a last group of 2 or 3, or is refused with 1 left`, withKernels(() => {
    const raw = randomBytes(200);
    const text = raw.toString('base64');
    for (let cut = 1; cut < text.length; cut++) {
      const got = decode(text.slice(0, cut));
      if (cut % 4 === 1) assert.equal(got, undefined, `cut ${cut}`);
      else assert.deepEqual(got, Buffer.from(text.slice(0, cut), 'base64'), `cut ${cut}`);
    }
  }));

  test(`decodeBase64 (${mode}): a space or a bad character in any block of a run of four (the kernel's iteration) is met where it stands`, withKernels(() => {
    // 352 characters: five 64-character iterations and two single blocks; each place breaks one iteration.
    const raw = randomBytes(264);
    const text = raw.toString('base64');
    for (let at = 0; at <= text.length; at++) {
      const spaced = b(`${text.slice(0, at)} ${text.slice(at)}`);
      assert.deepEqual(decode(spaced), raw, `space at ${at}`);
      if (at === text.length) break;
      const bad = Buffer.from(text);
      bad[at] = 0x2d; // '-': url-safe, not standard
      assert.equal(decode(bad), undefined, `'-' at ${at}`);
    }
  }));

  test(`decodeBase64 (${mode}): whatever it accepts of mutated text, the node's lenient decodeText decodes the same`, withKernels(() => {
    const next = rng(kernels ? 7 : 11);
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \n\r\t-_.';
    let accepted = 0;
    for (let i = 0; i < 3000; i++) {
      const chars = randomBytes(1 + Math.floor(next() * 60)).toString('base64').split('');
      for (let m = Math.floor(next() * 4); m > 0; m--) {
        const at = Math.floor(next() * (chars.length + 1));
        const r = next();
        if (r < 0.4) chars.splice(at, 0, alphabet[Math.floor(next() * alphabet.length)]!);
        else if (r < 0.7) chars.splice(at, 1);
        else chars[at] = alphabet[Math.floor(next() * alphabet.length)]!;
      }
      const s = chars.join('');
      const got = decode(s);
      if (got === undefined) continue;
      accepted++;
      assert.deepEqual(got, decodeText(s, 'base64'), JSON.stringify(s));
    }
    assert.ok(accepted > 500, `only ${accepted} accepted`);
  }));

  test(`isPlainAscii (${mode}): printable ASCII only; a control character, a backslash or a byte ≥ 0x80 at any place is found`, withKernels(() => {
    const text = b('x'.repeat(100));
    assert.equal(isPlainAscii(text), true);
    assert.equal(isPlainAscii(b(' ~\u007f')), true);
    assert.equal(isPlainAscii(new Uint8Array(0)), true);
    // 100 bytes: one run of four vectors (the kernel's iteration), two single vectors, four bytes in JS.
    for (const bad of [0x00, 0x09, 0x0a, 0x1f, 0x5c, 0x80, 0xff]) {
      for (const at of [0, 15, 16, 31, 47, 48, 63, 64, 79, 95, 96, 99]) {
        const t = Buffer.from(text);
        t[at] = bad;
        assert.equal(isPlainAscii(t), false, `${bad} at ${at}`);
      }
    }
  }));

  test(`firstNonFinite (${mode}): the index of the first NaN or ±Infinity; -0, subnormals and the largest float are finite`, withKernels(() => {
    const v = Float32Array.from({ length: 103 }, (_, i) => i - 50);
    v[3] = -0; v[4] = 1e-45; v[5] = 3.4028234663852886e38; v[6] = -3.4028234663852886e38;
    assert.equal(firstNonFinite(v), -1);
    assert.equal(firstNonFinite(new Float32Array(0)), -1);
    for (const bad of [NaN, Infinity, -Infinity]) {
      for (const at of [0, 3, 4, 99, 100, 102]) {
        const w = v.slice();
        w[at] = bad;
        w[102] = at === 102 ? bad : NaN; // a later one does not hide the first
        assert.equal(firstNonFinite(w), at, `${bad} at ${at}`);
      }
    }
    // A view at an offset of its buffer: the view's indices.
    assert.equal(firstNonFinite(Float32Array.from([1, NaN, 2, 3, 4, 5]).subarray(1)), 0);
  }));

  test(`decodeBase64Transient (${mode}): after isPlainAscii read the same text, or another, or floats, it decodes the text given`, withKernels(() => {
    const raws = [randomBytes(3000), randomBytes(3000), randomBytes(1000)];
    const texts = raws.map((r) => b(r.toString('base64')));
    assert.equal(isPlainAscii(texts[0]!), true);
    assert.deepEqual(Buffer.from(decodeBase64Transient(texts[0]!)!), raws[0]);
    assert.deepEqual(Buffer.from(decodeBase64Transient(texts[0]!)!), raws[0]);
    assert.equal(isPlainAscii(texts[1]!), true);
    assert.deepEqual(Buffer.from(decodeBase64Transient(texts[0]!)!), raws[0]);
    assert.equal(isPlainAscii(texts[2]!), true);
    assert.equal(firstNonFinite(new Float32Array(1000)), -1);
    assert.deepEqual(Buffer.from(decodeBase64Transient(texts[2]!)!), raws[2]);
    // A shorter view of the same bytes is not the text that was read.
    assert.equal(isPlainAscii(texts[1]!), true);
    assert.deepEqual(Buffer.from(decodeBase64Transient(texts[1]!.subarray(0, 2000))!), raws[1]!.subarray(0, 1500));
  }));

  test(`allFiniteBytes (${mode}): float32 bytes at any alignment, in JS memory or decoded into the kernels' own (decodeBase64Transient), any NaN or ±Infinity found`, withKernels(() => {
    const v = Float32Array.from({ length: 103 }, (_, i) => i - 50);
    v[3] = -0; v[4] = 1e-45; v[5] = 3.4028234663852886e38; v[6] = -3.4028234663852886e38;
    for (const shift of [0, 1, 3]) {
      const bytes = new Uint8Array(shift + v.byteLength);
      bytes.set(new Uint8Array(v.buffer), shift);
      const transient = decodeBase64Transient(b(Buffer.from(bytes).toString('base64')))!;
      assert.deepEqual(Buffer.from(transient), Buffer.from(bytes));
      for (const [where, all] of [['JS memory', bytes], ['decoded', transient]] as const) {
        const view = all.subarray(shift);
        assert.equal(allFiniteBytes(view), true, `${where}, shift ${shift}`);
        assert.equal(allFiniteBytes(view.subarray(0, 0)), true);
        const dv = new DataView(view.buffer, view.byteOffset, view.byteLength);
        for (const bad of [NaN, Infinity, -Infinity]) {
          for (const at of [0, 3, 4, 99, 100, 102]) {
            const was = dv.getFloat32(at * 4, true);
            dv.setFloat32(at * 4, bad, true);
            assert.equal(allFiniteBytes(view), false, `${where}, shift ${shift}: ${bad} at ${at}`);
            dv.setFloat32(at * 4, was, true);
          }
        }
      }
    }
  }));
}

test('base64 with whitespace every few characters is copied into the kernels once, not once per group (a report of spaced base64 held the node for a minute)', () => {
  for (const [decode, kib] of [[decodeBase64Transient, 1000], [decodeBase64, 3 * 1024]] as const) {
    const text = Buffer.from(Array.from({ length: Math.floor(kib * 1024 / 5) }, () => 'QUJD').join(' '));
    const before = textKernelStagedBytes();
    const bytes = decode(text);
    assert.deepEqual(Buffer.from(bytes!), Buffer.from(text.toString(), 'base64'));
    assert.ok(textKernelStagedBytes() - before <= 2 * text.length, `${textKernelStagedBytes() - before} bytes staged for ${text.length} of text`);
  }
});

test('JsonText: its bytes are its text; JSON.stringify writes it as the string', () => {
  const t = new JsonText(b('{"diff":"QUJD"}').subarray(9, 13));
  assert.equal(t.length, 4);
  assert.equal(t.text(), 'QUJD');
  assert.equal(JSON.stringify({ diff: t }), '{"diff":"QUJD"}');
});

const state = encodeState([
  { dims: [3, 2], data: Float32Array.from([1, -2, 3.5, 0, 1e-3, -7]) },
  { dims: [5], data: Float32Array.from([0.25, 0.5, 0.75, 1, 1.25]) },
]);
const outcome = (bytes: Uint8Array) => {
  try {
    return decodeState(bytes, 'the diff').map((t) => [t.dims, Array.from(t.data)]);
  } catch (err) {
    return err instanceof GridError ? `${err.code} ${err.message}` : `thrown ${String(err)}`;
  }
};

test('decodeState reads a syft.js State off its wire format to what protobufjs decodes, for it and for 4000 mutations of it (values, errors and their words)', () => {
  const next = rng(3);
  const cases: Uint8Array[] = [state, state.subarray(0, state.length - 1), new Uint8Array(0)];
  for (let i = 0; i < 4000; i++) {
    const m = Uint8Array.from(state);
    const r = next();
    if (r < 0.6) for (let k = 1 + Math.floor(next() * 3); k > 0; k--) m[Math.floor(next() * m.length)] = Math.floor(next() * 256);
    cases.push(r >= 0.6 && r < 0.8 ? m.subarray(0, Math.floor(next() * m.length)) : m);
  }
  let walked = 0;
  for (const c of cases) {
    useWireStateWalker(false);
    const want = outcome(c);
    useWireStateWalker(true);
    const got = outcome(c);
    assert.deepEqual(got, want, Buffer.from(c).toString('hex'));
    if (typeof got !== 'string') walked++;
  }
  assert.ok(walked > 100, `only ${walked} decoded`);
});

test('decodeStateText: base64 as frame bytes or as a string, url-safe or broken into lines, to the same tensors; not base64 is undefined', () => {
  const want = decodeState(state).map((t) => Array.from(t.data));
  const text = Buffer.from(state).toString('base64');
  const forms = [text, new JsonText(b(text)), new JsonText(b(text.replace(/\+/g, '-').replace(/\//g, '_'))), new JsonText(b(text.match(/.{1,76}/g)!.join('\n')))];
  for (const f of forms) assert.deepEqual(decodeStateText(f, 'the diff')!.map((t) => Array.from(t.data)), want);
  assert.equal(decodeStateText(new JsonText(b('not base64!')), 'the diff'), undefined);
  assert.equal(decodeStateText('not base64!', 'the diff'), undefined);
  // A larger State after a smaller one, and a smaller one after: the reused buffer never shows through.
  const big = encodeState([{ dims: [4000], data: Float32Array.from({ length: 4000 }, (_, i) => i) }]);
  assert.equal(decodeStateText(new JsonText(b(Buffer.from(big).toString('base64'))))![0]!.data[3999], 3999);
  assert.deepEqual(decodeStateText(new JsonText(b(text)))!.map((t) => Array.from(t.data)), want);
});

test('decodeState: a State the wire walker does not take whole (split, odd or repeated fields) decodes as protobufjs decodes it', () => {
  const varint = (n: number): number[] => { const o: number[] = []; do { let x = n & 0x7f; n >>>= 7; if (n) x |= 0x80; o.push(x); } while (n); return o; };
  const ld = (no: number, body: number[]): number[] => [...varint((no << 3) | 2), ...varint(body.length), ...body];
  const floats = (xs: number[]): number[] => [...new Uint8Array(Float32Array.from(xs).buffer)];
  const size = (dims: number[]): number[] => ld(1, ld(1, dims.flatMap(varint)));
  const dtype = ld(2, [...Buffer.from('float32')]);
  const serializer = [...varint(8 << 3), 4];
  const tensor = (...torch: number[][]): number[] => ld(2, ld(1, torch.flat()));
  const td = (...fields: number[][]): number[] => ld(2, fields.flat());
  const cases: Record<string, number[]> = {
    'one run': tensor(serializer, td(size([3]), dtype, ld(22, floats([1, 2, 3])))),
    'split in two runs': tensor(serializer, td(size([3]), dtype, ld(22, floats([1])), ld(22, floats([2, 3])))),
    'a run of 6 bytes': tensor(serializer, td(size([1]), dtype, ld(22, [...floats([1]), 0, 0]))),
    'contents_data twice': tensor(serializer, td(size([1]), dtype, ld(22, floats([1]))), td(size([2]), dtype, ld(22, floats([5, 6])))),
    'serializer twice': tensor(serializer, [...varint(8 << 3), 2], td(size([1]), dtype, ld(22, floats([1])))),
    'shape twice': tensor(serializer, td(size([2]), size([1]), dtype, ld(22, floats([7])))),
    'dims unpacked': tensor(serializer, td(ld(1, [...varint(1 << 3), 2]), dtype, ld(22, floats([1, 2])))),
    'float64': tensor(serializer, td(size([1]), ld(2, [...Buffer.from('float64')]), ld(23, [...new Uint8Array(Float64Array.from([0.5]).buffer)]))),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    useWireStateWalker(false);
    const want = outcome(Uint8Array.from(bytes));
    useWireStateWalker(true);
    assert.deepEqual(outcome(Uint8Array.from(bytes)), want, name);
  }
  assert.deepEqual(outcome(Uint8Array.from(cases['one run']!)), [[[3], [1, 2, 3]]]);
});
