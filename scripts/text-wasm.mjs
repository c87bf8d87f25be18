// Assembles the WebAssembly module of src/core/protocol/text-bytes.ts (no wabt in this project) and prints
// it as base64: node scripts/text-wasm.mjs. Three SIMD kernels over bytes the caller copied into memory:
//   b64(src i32, blocks i32, dst i32) -> i32   decodes up to `blocks` blocks of 16 base64 characters
//     (standard alphabet, nothing else: no '=', no whitespace) into 12 bytes each, storing 16 (4 spare
//     bytes after dst's end); returns the blocks decoded before the first one holding another character.
//     Per block (Muła & Lemire's lookup): hi = v >> 4, lo = v & 15; invalid iff
//     swizzle(LUT_HI, hi) & swizzle(LUT_LO, lo) ≠ 0; value = v + swizzle(ROLL, hi + (v == '/' ? -1 : 0));
//     pack i16 lanes (a | b<<8) → a<<6 | b, i32 lanes (x | y<<16) → x<<12 | y, then bytes 2,1,0 of each.
//     Four blocks an iteration with one validity test (below); ~1.7× the block-at-a-time loop.
//   finite(ptr i32, n i32) -> i32   1 when none of n float32s (n a multiple of 4) has an all-ones exponent
//   plain(ptr i32, n i32) -> i32    1 when each of n bytes (a multiple of 16) is printable ASCII 0x20-0x7f
//     and none is a backslash (a JSON string's raw contents that are its text)
const leb = (n) => { const o = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; o.push(b); } while (n); return o; };
const str = (s) => [...leb(s.length), ...Buffer.from(s)];
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
const V = (op) => [0xfd, ...leb(op)];
const i8 = (xs) => xs.map((x) => x & 0xff);
const c128 = (bytes) => [...V(0x0c), ...bytes];
const splat8 = (b) => c128(Array(16).fill(b));
const splat16 = (w) => c128(Array.from({ length: 16 }, (_, i) => (i % 2 === 0 ? w & 0xff : w >> 8)));
const splat32 = (w) => c128(Array.from({ length: 16 }, (_, i) => (w >>> (8 * (i % 4))) & 0xff));
const LUT_LO = [0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1a, 0x1b, 0x1b, 0x1b, 0x1a];
const LUT_HI = [0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10];
const ROLL = [0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0];
const get = (i) => [0x20, i], set = (i) => [0x21, i];
const LOAD = [...V(0x00), 0, 0], STORE = [...V(0x0b), 0, 0];

// b64: params src 0, blocks 1, dst 2; locals done 3 (i32), v 4, hi 5, and the constants (v128):
// LUT_HI 6, LUT_LO 7, ROLL 8, 0x0f 9, 0x2f 10, i16 0x00ff 11, i16 pairs (0x1000, 1) 12, err 13.
// Four blocks an iteration, their validity OR-ed into err and tested once: a window of good base64 takes
// one branch per 64 characters. An iteration holding a bad character is redone a block at a time, which
// stops before the first bad block (the blocks before it stored the same bytes again).
// i32 lanes (x | y<<16) → x<<12 | y is one i32x4.dot_i16x8_s with (0x1000, 1) pairs.
const decodeBlock = (at) => [
  ...get(0), ...V(0x00), 0, at, ...set(4),                           // v = load src + at
  ...get(4), 0x41, 4, ...V(0x8d), ...get(9), ...V(0x4e), ...set(5),  // hi = v >>u 4 per byte: i16 lanes' shift, masked (x64 has no byte shift)
  ...get(13),
  ...get(6), ...get(5), ...V(0x0e),
  ...get(7), ...get(4), ...get(9), ...V(0x4e), ...V(0x0e),
  ...V(0x4e), ...V(0x50), ...set(13),                                // err |= LUT_HI[hi] & LUT_LO[lo]
  ...get(4),
  ...get(8), ...get(5), ...get(4), ...get(10), ...V(0x23), ...V(0x6e), ...V(0x0e),
  ...V(0x6e), ...set(4),                                             // v = 6-bit values
  ...get(4), ...get(11), ...V(0x4e), 0x41, 6, ...V(0x8b),
  ...get(4), 0x41, 8, ...V(0x8d), ...V(0x50),                        // 12-bit i16 lanes
  ...get(12), ...V(0xba),                                            // 24-bit i32 lanes
  ...set(4),
  ...get(2), ...get(4), ...get(4), ...V(0x0d), 2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, 3, 7, 11, 15, ...V(0x0b), 0, (at / 16) * 12,
];
const b64 = [
  0x02, 0x01, 0x7f, 0x0a, 0x7b,
  ...c128(LUT_HI), ...set(6), ...c128(LUT_LO), ...set(7), ...c128(i8(ROLL)), ...set(8),
  ...splat8(0x0f), ...set(9), ...splat8(0x2f), ...set(10), ...splat16(0x00ff), ...set(11), ...splat32(0x00011000), ...set(12),
  0x02, 0x40, 0x03, 0x40,                                            // four blocks at a time
  ...get(1), ...get(3), 0x6b, 0x41, 4, 0x49, 0x0d, 1,                // if blocks - done <u 4 break
  ...decodeBlock(0), ...decodeBlock(16), ...decodeBlock(32), ...decodeBlock(48),
  ...get(13), ...V(0x53), 0x0d, 1,                                   // any invalid: break (err stays set)
  ...get(0), 0x41, 0xc0, 0x00, 0x6a, ...set(0),
  ...get(2), 0x41, 48, 0x6a, ...set(2),
  ...get(3), 0x41, 4, 0x6a, ...set(3),
  0x0c, 0,
  0x0b, 0x0b,
  0x02, 0x40, 0x03, 0x40,                                            // the rest (or the bad iteration) a block at a time
  ...get(3), ...get(1), 0x4f, 0x0d, 1,                               // if done >= blocks break
  ...c128(Array(16).fill(0)), ...set(13),
  ...decodeBlock(0),
  ...get(13), ...V(0x53), 0x0d, 1,                                   // invalid: break
  ...get(0), 0x41, 16, 0x6a, ...set(0),
  ...get(2), 0x41, 12, 0x6a, ...set(2),
  ...get(3), 0x41, 1, 0x6a, ...set(3),
  0x0c, 0,
  0x0b, 0x0b,
  ...get(3),
  0x0b,
];
// finite: params ptr 0, n 1; locals end 2 (i32), acc 3, m 4 (v128)
const finite = [
  0x02, 0x01, 0x7f, 0x02, 0x7b,
  ...get(0), ...get(1), 0x41, 2, 0x74, 0x6a, ...set(2),
  ...splat32(0x7f800000), ...set(4),
  0x02, 0x40, 0x03, 0x40,
  ...get(0), ...get(2), 0x4f, 0x0d, 1,
  ...get(3), ...get(0), ...LOAD, ...get(4), ...V(0x4e), ...get(4), ...V(0x37), ...V(0x50), ...set(3),
  ...get(0), 0x41, 16, 0x6a, ...set(0),
  0x0c, 0,
  0x0b, 0x0b,
  ...get(3), ...V(0x53), 0x45,
  0x0b,
];
// plain: params ptr 0, n 1; locals end 2 (i32), acc 3, v 4, 0x20 5, '\\' 6 (v128). One signed compare
// finds both a control character and a byte >= 0x80 (negative as i8): v <s 0x20. Four vectors an
// iteration while 64 bytes remain, then one at a time; tested once, at the end.
const plainVector = (at) => [
  ...get(0), ...V(0x00), 0, at, ...set(4),
  ...get(3), ...get(4), ...get(5), ...V(0x25), ...get(4), ...get(6), ...V(0x23), ...V(0x50), ...V(0x50), ...set(3),
];
const plain = [
  0x02, 0x01, 0x7f, 0x04, 0x7b,
  ...get(0), ...get(1), 0x6a, ...set(2),
  ...splat8(0x20), ...set(5), ...splat8(0x5c), ...set(6),
  0x02, 0x40, 0x03, 0x40,
  ...get(2), ...get(0), 0x6b, 0x41, 0xc0, 0x00, 0x49, 0x0d, 1,       // if end - ptr <u 64 break
  ...plainVector(0), ...plainVector(16), ...plainVector(32), ...plainVector(48),
  ...get(0), 0x41, 0xc0, 0x00, 0x6a, ...set(0),
  0x0c, 0,
  0x0b, 0x0b,
  0x02, 0x40, 0x03, 0x40,
  ...get(0), ...get(2), 0x4f, 0x0d, 1,
  ...plainVector(0),
  ...get(0), 0x41, 16, 0x6a, ...set(0),
  0x0c, 0,
  0x0b, 0x0b,
  ...get(3), ...V(0x53), 0x45,
  0x0b,
];
const fn = (body) => [...leb(body.length), ...body];
const mod = [
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, [2, 0x60, 3, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7f]),
  ...section(3, [3, 0, 1, 1]),
  ...section(5, [1, 0, 1]),
  ...section(7, [4, ...str('memory'), 2, 0, ...str('b64'), 0, 0, ...str('finite'), 0, 1, ...str('plain'), 0, 2]),
  ...section(10, [3, ...fn(b64), ...fn(finite), ...fn(plain)]),
];
process.stdout.write(`${Buffer.from(mod).toString('base64')}\n`);
