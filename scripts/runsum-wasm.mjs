// Assembles the WebAssembly module of src/compute/runsum-wasm.ts (no wabt in this project) and prints it
// as base64: node scripts/runsum-wasm.mjs. The function is add(sum i32, x i32, n i32, w f64):
//   (local end i32) (local wv v128) (local v v128)
//   wv = f64x2.splat(w); end = x + 4n
//   loop while x < end: v = v128.load(x)
//     sum[0..1] += f64x2.promote_low_f32x4(v) * wv
//     sum[2..3] += f64x2.promote_low_f32x4(i8x16.shuffle(v, v, 8..15, 0..7)) * wv
//     sum += 32; x += 16
const leb = (n) => { const o = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; o.push(b); } while (n); return o; };
const str = (s) => [...leb(s.length), ...Buffer.from(s)];
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
const V = (op) => [0xfd, ...leb(op)];
const body = [
  0x02, 0x01, 0x7f, 0x02, 0x7b,                 // locals: end i32, wv v128, v v128
  0x20, 3, ...V(0x14), 0x21, 5,                 // wv = f64x2.splat(w)
  0x20, 1, 0x20, 2, 0x41, 2, 0x74, 0x6a, 0x21, 4, // end = diff + 4n
  0x02, 0x40, 0x03, 0x40,
  0x20, 1, 0x20, 4, 0x4f, 0x0d, 1,              // if diff >= end break
  0x20, 1, ...V(0x00), 2, 0, 0x21, 6,           // v = v128.load diff (4 floats)
  0x20, 0,
  0x20, 0, ...V(0x00), 3, 0,                    // sum[0..1]
  0x20, 6, ...V(0x5f), 0x20, 5, ...V(0xf2), ...V(0xf0),
  ...V(0x0b), 3, 0,
  0x20, 0,
  0x20, 0, ...V(0x00), 3, 16,                   // sum[2..3]
  0x20, 6, 0x20, 6, ...V(0x0d), 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7,
  ...V(0x5f), 0x20, 5, ...V(0xf2), ...V(0xf0),
  ...V(0x0b), 3, 16,
  0x20, 0, 0x41, 32, 0x6a, 0x21, 0,             // sum += 32
  0x20, 1, 0x41, 16, 0x6a, 0x21, 1,             // diff += 16
  0x0c, 0,
  0x0b, 0x0b, 0x0b,
];
const mod = [
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, [1, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7c, 0]),
  ...section(3, [1, 0]),
  ...section(5, [1, 0, 1]),
  ...section(7, [2, ...str('memory'), 2, 0, ...str('add'), 0, 0]),
  ...section(10, [1, ...leb(body.length), ...body]),
];
const b64 = Buffer.from(mod).toString('base64');
process.stdout.write(`${b64}\n`);
