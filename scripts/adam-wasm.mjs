// Assembles the WebAssembly module of src/compute/adam-wasm.ts (no wabt in this project) and prints it as
// base64: node scripts/adam-wasm.mjs. The function is
//   adam(p, m, v, g, out, n i32, b1, c1, b2, c2, eps, lr f32)   (pointers are byte offsets, n a multiple of 4)
// and does, four floats at a time, the exact float32 operations of the plan graph's Adam nodes:
//   m = b1·m + c1·g;  v = b2·v + c2·(g·g);  out = p − lr·(m / (√v + eps))
const leb = (n) => { const o = []; do { let b = n & 0x7f; n >>>= 7; if (n) b |= 0x80; o.push(b); } while (n); return o; };
const str = (s) => [...leb(s.length), ...Buffer.from(s)];
const section = (id, bytes) => [id, ...leb(bytes.length), ...bytes];
const V = (op) => [0xfd, ...leb(op)];
const get = (i) => [0x20, i], set = (i) => [0x21, i];
const load = [...V(0x00), 4, 0], store = [...V(0x0b), 4, 0];
const splat = V(0x13), add = V(0xe4), sub = V(0xe5), mul = V(0xe6), div = V(0xe7), sqrt = V(0xe3);
const at = (base) => [...get(base), ...get(12), 0x6a]; // base + i
// params 0 p, 1 m, 2 v, 3 g, 4 out, 5 n, 6 b1, 7 c1, 8 b2, 9 c2, 10 eps, 11 lr
// locals 12 i, 13 end (i32); 14 vb1, 15 vc1, 16 vb2, 17 vc2, 18 veps, 19 vlr, 20 g, 21 m, 22 v (v128)
const body = [
  0x02, 0x02, 0x7f, 0x09, 0x7b,
  ...[6, 7, 8, 9, 10, 11].flatMap((k) => [...get(k), ...splat, ...set(k + 8)]),
  ...get(5), 0x41, 2, 0x74, ...set(13),                       // end = 4n
  0x02, 0x40, 0x03, 0x40,
  ...get(12), ...get(13), 0x4f, 0x0d, 1,                      // if i >= end break
  ...at(3), ...load, ...set(20),                              // g
  ...get(14), ...at(1), ...load, ...mul, ...get(15), ...get(20), ...mul, ...add, ...set(21),
  ...at(1), ...get(21), ...store,                             // m = b1·m + c1·g
  ...get(16), ...at(2), ...load, ...mul, ...get(17), ...get(20), ...get(20), ...mul, ...mul, ...add, ...set(22),
  ...at(2), ...get(22), ...store,                             // v = b2·v + c2·(g·g)
  ...at(4), ...at(0), ...load,
  ...get(19), ...get(21), ...get(22), ...sqrt, ...get(18), ...add, ...div, ...mul, ...sub,
  ...store,                                                   // out = p − lr·(m / (√v + eps))
  ...get(12), 0x41, 16, 0x6a, ...set(12),
  0x0c, 0,
  0x0b, 0x0b, 0x0b,
];
const mod = [
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, [1, 0x60, 12, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7d, 0x7d, 0x7d, 0x7d, 0x7d, 0x7d, 0]),
  ...section(3, [1, 0]),
  ...section(5, [1, 0, 1]),
  ...section(7, [2, ...str('memory'), 2, 0, ...str('adam'), 0, 0]),
  ...section(10, [1, ...leb(body.length), ...body]),
];
process.stdout.write(`${Buffer.from(mod).toString('base64')}\n`);
