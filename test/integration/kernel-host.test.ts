// The notebook kernel as a user meets it: real kernel processes running cells — state, top-level
// await, TypeScript, errors on the cell's own lines, streamed and rich output, the queue, interrupt
// and restart.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { PNG } from 'pngjs';
import { encodeTensorProto } from '../../src/compute/onnx/tensor-proto';
import { writeNpy } from '../../src/core/npy';
import { tensorFromValues } from '../../src/core/protocol/tensor';
import type { CellOutput, KernelHost, LateOutput } from '../../src/kernel';
import { notebookDir, plainOf, run, startKernel, stderrOf, stdoutOf, value, within, workerBundle } from './kernel-harness';

describe('one notebook session', () => {
  let kernel: KernelHost;
  let nb: Awaited<ReturnType<typeof notebookDir>>;

  before(async () => {
    nb = await notebookDir();
    await writeFile(join(nb.dir, 'helpers.mjs'), 'export const greet = (name) => `hello ${name}`;\nexport default 42;\n');
    await mkdir(join(nb.dir, 'node_modules', 'esm-only'), { recursive: true });
    await writeFile(join(nb.dir, 'node_modules', 'esm-only', 'package.json'), JSON.stringify({ name: 'esm-only', type: 'module', exports: { import: './index.js' } }));
    await writeFile(join(nb.dir, 'node_modules', 'esm-only', 'index.js'), 'export const answer = 41 + 1;\n');
    await mkdir(join(nb.dir, 'node_modules', 'cjs-pkg'), { recursive: true });
    await writeFile(join(nb.dir, 'node_modules', 'cjs-pkg', 'index.js'), 'module.exports = { kind: "cjs" };\n');
    const digit = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0, 0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0, 0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0];
    await writeFile(join(nb.dir, 'digit.npy'), writeNpy(tensorFromValues('float64', [8, 8], digit)));
    kernel = await startKernel({ cwd: nb.dir });
    await kernel.start();
  });

  after(async () => {
    await kernel.dispose();
    await nb.remove();
  });

  test('variables, classes, functions and imports defined in one cell are there in the next', async () => {
    await value(kernel, [
      "import fs from 'node:fs';",
      "import { join } from 'node:path';",
      "import meaning, { greet } from './helpers.mjs';",
      "import * as esm from 'esm-only';",
      "const cjs = require('cjs-pkg');",
      'let counter = 1;',
      'const { a, b: [c] } = { a: 2, b: [3] };',
      'class Point { constructor(public x: number, public y: number) {} norm() { return Math.hypot(this.x, this.y); } }',
      'function double(n: number) { return 2 * n; }',
    ].join('\n'));
    assert.equal(await value(kernel, 'counter += 1; counter'), '2');
    assert.equal(await value(kernel, 'counter'), '2', 'an assignment in a cell persists');
    assert.equal(await value(kernel, 'typeof fs.readFileSync + " " + join("a", "b")'), 'function a/b');
    assert.equal(await value(kernel, 'greet("grid") + " " + meaning + " " + esm.answer + " " + cjs.kind'), 'hello grid 42 42 cjs');
    assert.equal(await value(kernel, 'new Point(3, 4).norm() + double(a + c)'), '15');
    assert.equal(await value(kernel, 'const dyn = await import("./helpers.mjs");\nconst lazy = () => import("esm-only");\ndyn.greet("again") + " " + (await lazy()).answer'), 'hello again 42');
    assert.equal(await value(kernel, 'import.meta.dirname === process.cwd() && import.meta.url.startsWith("file://")'), 'true');
    await value(kernel, "import crypto from 'node:crypto';"); // Node's global `crypto` is a getter-only Web Crypto
    assert.equal(await value(kernel, 'crypto.createHash("sha256").update("grid").digest("hex").length'), '64');
  });

  test('importing a module that is not there names it, at the import line', async () => {
    const { result } = await run(kernel, 'const x = 1;\nimport missing from "no-such-package";');
    assert.equal(result.status, 'error');
    assert.match(result.error!.message, /no-such-package/);
    assert.equal(result.error?.line, 2);
  });

  test('redeclaring const in a later cell shadows the old value, as re-running a Jupyter cell does', async () => {
    await value(kernel, 'const model = "v1"; const useModel = () => model;');
    await value(kernel, 'const model = "v2";');
    assert.equal(await value(kernel, 'model + " " + useModel()'), 'v2 v2');
  });

  test('top-level await, with the awaited result kept for later cells', async () => {
    assert.equal(await value(kernel, 'const answer = await new Promise<number>((resolve) => setImmediate(() => resolve(42)));\nanswer'), '42');
    assert.equal(await value(kernel, 'answer + 1'), '43');
    assert.equal(await value(kernel, 'Promise.resolve("a promise as the last value is awaited")'), 'a promise as the last value is awaited');
  });

  test('TypeScript: annotations, interfaces, generics and enums run', async () => {
    const out = await value(kernel, [
      'interface Sample { features: number[]; label: number }',
      'enum Split { Train = "train", Test = "test" }',
      'function first<T>(xs: readonly T[]): T | undefined { return xs[0]; }',
      'const s: Sample = { features: [0.5, 1.5], label: 1 };',
      'const split: Split = Split.Test;',
      '`${first<number>(s.features)} ${split}`',
    ].join('\n'));
    assert.equal(out, '0.5 test');
  });

  test('a syntax error points at the line and column in the cell', async () => {
    const { result, outputs } = await run(kernel, 'const ok = 1;\nfunction broken(a: number {\n  return a;\n}');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.name, 'SyntaxError');
    assert.equal(result.error?.line, 2);
    assert.match(result.error!.stack, new RegExp(`at Cell \\[${result.executionCount}\\]:2:\\d+`));
    assert.match(result.error!.stack, /function broken\(a: number \{/, 'the offending line is shown');
    assert.deepEqual(outputs.at(-1), { kind: 'error', error: result.error });
  });

  test('a runtime error names the lines of every cell on its way, in TypeScript coordinates', async () => {
    const defined = await run(kernel, [
      'interface Options {',
      '  scale: number;',
      '}',
      'function scaleAll(xs: number[], o: Options): number[] {',
      '  return xs.map((x) => {',
      '    if (x < 0) throw new RangeError(`negative value ${x}`);',
      '    return x * o.scale;',
      '  });',
      '}',
    ].join('\n'));
    assert.equal(defined.result.status, 'ok');
    const { result } = await run(kernel, 'const data: number[] = [1, 2, -3];\n\nscaleAll(data, { scale: 2 });');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.name, 'RangeError');
    assert.equal(result.error?.message, 'negative value -3');
    assert.equal(result.error?.line, 3, 'the line of the failing cell');
    const stack = result.error!.stack;
    assert.match(stack, new RegExp(`Cell \\[${defined.result.executionCount}\\]:6:\\d+`), 'the throw, in the earlier cell');
    assert.match(stack, new RegExp(`Cell \\[${result.executionCount}\\]:3:1`), 'the call');
    assert.doesNotMatch(stack, /worker|__grid_cell|node:vm/, 'no kernel internals');
  });

  test('console.log/info go to stdout and console.error/warn to stderr, in order', async () => {
    const { outputs } = await run(kernel, 'console.log("one", { a: 1 });\nconsole.info("two");\nconsole.error("three");\nconsole.warn("four");\nprocess.stdout.write("five\\n");');
    assert.equal(stdoutOf(outputs), "one { a: 1 }\ntwo\nfive\n");
    assert.equal(stderrOf(outputs), 'three\nfour\n');
  });

  test('display() chooses rich outputs, takes explicit mimes and updates named displays', async () => {
    const { outputs } = await run(kernel, [
      'display({ status: "ok", nodes: 2 });',
      'display("<b>bold</b>", "text/html");',
      'display({ "text/markdown": "# Title", "text/plain": "Title" });',
      'display("epoch 1", { id: "progress" });',
      'display("epoch 2", { id: "progress", update: true });',
      'grid.tensor("float32", [2, 3], [1, 2, 3, 4, 5, 6.5])',
    ].join('\n'));
    const displays = outputs.filter((o) => o.kind === 'display');
    assert.equal(displays.length, 6);
    assert.deepEqual(JSON.parse(displays[0]!.data['application/json'] as string), { status: 'ok', nodes: 2 });
    assert.deepEqual(displays[1]!.data, { 'text/html': '<b>bold</b>' });
    assert.deepEqual(displays[2]!.data, { 'text/markdown': '# Title', 'text/plain': 'Title' });
    assert.deepEqual([displays[3]!.displayId, displays[3]!.update], ['progress', undefined]);
    assert.deepEqual([displays[4]!.displayId, displays[4]!.update, displays[4]!.data['text/plain']], ['progress', true, 'epoch 2']);
    assert.equal(displays[5]!.data['text/plain'], 'float32 [2, 3]\n[[1.0, 2.0, 3.0],\n [4.0, 5.0, 6.5]]');
    assert.match(displays[5]!.data['text/html'] as string, /<table/);
  });

  test('an 8x8 digit read from a .npy file shows as a PNG of that digit', async () => {
    const { result, outputs } = await run(kernel, "const digit = await grid.fromNpy('digit.npy');\ndigit");
    assert.equal(result.status, 'ok');
    const shown = outputs.at(-1);
    assert.ok(shown?.kind === 'display');
    assert.ok((shown.data['text/plain'] as string).startsWith('float64 [8, 8]\n[[ 0,  0,  5, 13,  9,  1,  0,  0],\n [ 0,  0, 13, 15,'));
    const png = PNG.sync.read(Buffer.from(shown.data['image/png'] as Uint8Array));
    assert.deepEqual([png.width, png.height], [128, 128]);
    const pixel = (x: number, y: number) => png.data[(y * 16 * 128 + x * 16) * 4]!;
    assert.equal(pixel(0, 0), 0, 'background');
    assert.equal(pixel(3, 0), Math.round((13 / 15) * 255), 'a stroke, stretched by the max (15)');
    assert.equal(pixel(3, 1), 255, 'the brightest pixel');
    assert.equal(await value(kernel, 'JSON.stringify(grid.toArray(digit)[0])'), '[0,0,5,13,9,1,0,0]');
  });

  test('an ONNX TensorProto .pb file reads into a tensor; a bad file is a coded error at its line', async () => {
    await writeFile(join(nb.dir, 'input_0.pb'), encodeTensorProto('input_0', tensorFromValues('int64', [2, 2], [1, 2, 3, -4])));
    await writeFile(join(nb.dir, 'broken.npy'), 'not numpy');
    assert.equal(await value(kernel, "const input = await grid.fromPb('input_0.pb');\ninput"), 'int64 [2, 2]\n[[ 1,  2],\n [ 3, -4]]');
    const { result } = await run(kernel, "\nawait grid.fromNpy('broken.npy')");
    assert.equal(result.error?.code, 'GRID_ERR_INVALID_TENSOR');
    assert.match(result.error!.message, /broken\.npy/);
    assert.equal(result.error?.line, 2);
  });

  test('output after a cell ended is reported as late output of that cell', async () => {
    const late = new Promise<LateOutput>((resolve) => {
      const sub = kernel.onDidEmitLateOutput((e) => { sub.dispose(); resolve(e); });
    });
    const { result } = await run(kernel, 'setImmediate(() => console.log("after the cell"));');
    assert.equal(result.status, 'ok');
    const e = await late;
    assert.equal(e.executionCount, result.executionCount);
    assert.deepEqual(e.output, { kind: 'stream', stream: 'stdout', text: 'after the cell\n' });
  });

  test('what an earlier cell\'s timer or promise prints while a later cell runs goes to the earlier cell', async () => {
    const late: LateOutput[] = [];
    const sub = kernel.onDidEmitLateOutput((e) => late.push(e));
    try {
      const first = await run(kernel, [
        'let release!: () => void;',
        'const released = new Promise<void>((r) => { release = r; });',
        'released.then(() => console.log("promise of the first cell"));',
        'let tick = false, ticked = false;',
        'const poll = setInterval(() => { if (tick) { console.log("timer of the first cell"); ticked = true; clearInterval(poll); } }, 1);',
      ].join('\n'));
      assert.equal(first.result.status, 'ok');
      // The second cell sets both off and waits until they have printed.
      const second = await run(kernel, 'console.log("second cell");\nrelease(); tick = true;\nawait released;\nwhile (!ticked) await new Promise((r) => setImmediate(r));');
      assert.equal(second.result.status, 'ok');
      assert.equal(stdoutOf(second.outputs), 'second cell\n', 'the later cell shows only its own output');
      const ofFirst = late.filter((e) => e.executionCount === first.result.executionCount).map((e) => (e.output.kind === 'stream' ? e.output.text : e.output.kind)).join('');
      assert.equal(ofFirst, 'promise of the first cell\ntimer of the first cell\n');
    } finally {
      sub.dispose();
    }
  });

  test('an exception thrown from a timer is reported, and the kernel keeps its state', async () => {
    const pid = kernel.pid;
    const late = new Promise<LateOutput>((resolve) => {
      const sub = kernel.onDidEmitLateOutput((e) => { if (e.output.kind === 'error') { sub.dispose(); resolve(e); } });
    });
    await value(kernel, 'const survivor = "alive";\nsetImmediate(() => { throw new TypeError("stray"); });');
    const e = await late;
    assert.ok(e.output.kind === 'error');
    assert.equal(e.output.error.name, 'TypeError');
    assert.equal(e.output.error.line, 2);
    assert.equal(await value(kernel, 'survivor'), 'alive');
    assert.equal(kernel.pid, pid);
  });

  test('grid calls without a bridge fail with GRID_ERR_NOT_CONNECTED at the calling line', async () => {
    const { result } = await run(kernel, 'const before = 1;\nawait grid.models();');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.code, 'GRID_ERR_NOT_CONNECTED');
    assert.equal(result.error?.line, 2);
  });

  test('queued cells run in order with consecutive counts; a failure cancels the rest', async () => {
    const started: number[] = [];
    const onStart = (info: { executionCount: number }) => started.push(info.executionCount);
    const results = await Promise.all([
      kernel.execute('const q = 1; q', { onStart }),
      kernel.execute('q + 1', { onStart }),
      kernel.execute('throw new Error("stop here")', { onStart }),
      kernel.execute('globalThis.ranAfterFailure = true', { onStart }),
    ]);
    assert.deepEqual(results.map((r) => r.status), ['ok', 'ok', 'error', 'cancelled']);
    const [r1, r2, r3, r4] = results;
    assert.deepEqual([r2!.executionCount, r3!.executionCount], [r1!.executionCount! + 1, r1!.executionCount! + 2]);
    assert.deepEqual(started, [r1!.executionCount, r2!.executionCount, r3!.executionCount]);
    assert.equal(r4!.executionCount, undefined);
    assert.ok(r1!.endTime <= r2!.startTime! && r2!.endTime <= r3!.startTime!);
    assert.equal(await value(kernel, 'typeof ranAfterFailure'), 'undefined');
  });

  test('aborting a queued cell cancels it before it runs', async () => {
    const controller = new AbortController();
    const first = kernel.execute('await new Promise((r) => setImmediate(r)); "first"');
    const second = kernel.execute('globalThis.abortedRan = true', { signal: controller.signal });
    controller.abort();
    assert.equal((await second).status, 'cancelled');
    assert.equal((await first).status, 'ok');
    assert.equal(await value(kernel, 'typeof abortedRan'), 'undefined');
  });

  test('ping measures a round trip to the kernel process', async () => {
    const ms = await kernel.ping();
    assert.ok(ms > 0 && ms < 5000);
  });
});

describe('output bounds', () => {
  test('the per-cell output cap bounds what child processes write straight to stdout/stderr, and display()', async () => {
    const cap = 64 * 1024;
    const kernel = await startKernel({ maxStreamBytesPerCell: cap });
    try {
      const cells = {
        spawnSync: 'require("node:child_process").spawnSync("head", ["-c", "1000000", "/dev/zero"], { stdio: ["ignore", "inherit", "inherit"] }).status',
        // Raw bytes on top of the cell's own console output: one budget for both.
        'console and spawn': 'console.log("x".repeat(40_000));\nconst c = require("node:child_process").spawn("sh", ["-c", "head -c 1000000 /dev/zero >&2"], { stdio: ["ignore", "inherit", "inherit"] });\nawait new Promise((r) => c.on("exit", r));\nc.exitCode',
      };
      for (const [what, code] of Object.entries(cells)) {
        const { result, outputs } = await run(kernel, code, { language: 'javascript' });
        assert.equal(result.status, 'ok', `${what}: ${result.error?.stack}`);
        assert.deepEqual(plainOf(outputs), ['0'], what);
        const shown = stdoutOf(outputs).length + stderrOf(outputs).length;
        assert.ok(shown < cap + 200, `${what}: ${shown} characters reached the cell`);
        assert.ok(stderrOf(outputs).endsWith('[output truncated: this cell printed more than 64 KiB]\n'), `${what}: ${stderrOf(outputs).slice(-80)}`);
      }
      assert.equal(await value(kernel, 'console.log("fresh budget"); 1'), '1', 'the next cell has its own budget');

      // display() shares the budget: new displays add up; updates replace theirs in place and do not.
      const many = await run(kernel, 'for (let i = 0; i < 100; i++) display("x".repeat(2000));\nconsole.log("after");\n"done"');
      assert.equal(many.result.status, 'ok');
      const displays = many.outputs.filter((o) => o.kind === 'display' && !o.result).length;
      assert.ok(displays >= 20 && displays < 40, `${displays} displays of 2000 characters reached the cell`);
      assert.equal(plainOf(many.outputs).at(-1), 'done', 'the cell\'s value still shows');
      assert.ok(stderrOf(many.outputs).endsWith('[output truncated: this cell printed more than 64 KiB]\n'), stderrOf(many.outputs));
      assert.equal(stdoutOf(many.outputs), '', 'nothing after the cap');
      const updates = await run(kernel, 'display("0", { id: "p" });\nfor (let i = 1; i <= 200; i++) display(String(i).repeat(1000), { id: "p", update: true });\n"done"');
      assert.equal(updates.outputs.filter((o) => o.kind === 'display').length, 202, 'every update and the value');
      assert.equal(stderrOf(updates.outputs), '');
    } finally {
      await kernel.dispose();
    }
  });
  test('display updates of ids never shown count as new displays, and displays share one budget with raw child output', async () => {
    const cap = 64 * 1024;
    const kernel = await startKernel({ maxStreamBytesPerCell: cap });
    const bytesOf = (outputs: CellOutput[]) => outputs.reduce((n, o) => n + (o.kind === 'stream' ? Buffer.byteLength(o.text)
      : o.kind === 'display' && !o.result ? Object.values(o.data).reduce((m, d) => m + (typeof d === 'string' ? Buffer.byteLength(d) : d.byteLength), 0) : 0), 0);
    try {
      // Each update names an id the cell never showed: each appears as a new output, so each counts.
      const unseen = await run(kernel, 'for (let i = 0; i < 100; i++) display("x".repeat(2000), { id: "u" + i, update: true });\n"done"');
      assert.equal(unseen.result.status, 'ok');
      assert.ok(bytesOf(unseen.outputs) < cap + 200, `${bytesOf(unseen.outputs)} bytes of updates to unseen ids reached the cell`);
      assert.ok(stderrOf(unseen.outputs).endsWith('[output truncated: this cell printed more than 64 KiB]\n'), stderrOf(unseen.outputs));
      assert.equal(plainOf(unseen.outputs).at(-1), 'done');

      // 60 000 bytes of displays, then 60 000 raw bytes from a child: together past the cap.
      const mixed = await run(kernel, 'for (let i = 0; i < 30; i++) display("y".repeat(2000));\nrequire("node:child_process").spawnSync("head", ["-c", "60000", "/dev/zero"], { stdio: ["ignore", "inherit", "inherit"] }).status',
        { language: 'javascript' });
      assert.equal(mixed.result.status, 'ok');
      assert.ok(bytesOf(mixed.outputs) < cap + 200, `${bytesOf(mixed.outputs)} bytes of displays and raw output reached the cell`);
      assert.ok(stderrOf(mixed.outputs).endsWith('[output truncated: this cell printed more than 64 KiB]\n'), stderrOf(mixed.outputs).slice(-80));
      assert.deepEqual(plainOf(mixed.outputs).slice(-1), ['0']);
    } finally {
      await kernel.dispose();
    }
  });

  test('multi-byte characters a child process writes arrive whole, and the cap counts their bytes', async () => {
    const cap = 1024 * 1024;
    const kernel = await startKernel({ maxStreamBytesPerCell: cap });
    const euros = (n: number) => `require("node:child_process").spawnSync(process.execPath, ["-e", "process.stdout.write(\\"€\\".repeat(${n}))"], { stdio: ["ignore", "inherit", "inherit"] }).status`;
    try {
      // 300 000 bytes, 3 to a character, in one write: the pipe hands them over in chunks split anywhere.
      const whole = await run(kernel, euros(100_000), { language: 'javascript' });
      assert.equal(whole.result.status, 'ok', whole.result.error?.stack);
      const text = stdoutOf(whole.outputs);
      assert.equal((text.match(/\uFFFD/g) ?? []).length, 0, 'no character was cut in two');
      assert.equal(text, '€'.repeat(100_000));
      assert.equal(stderrOf(whole.outputs), '');

      // 1.2 MB in 400 000 characters: what is shown is at most 1 MiB of bytes, not of characters.
      const many = await run(kernel, euros(400_000), { language: 'javascript' });
      assert.equal(many.result.status, 'ok');
      const shown = stdoutOf(many.outputs);
      assert.ok(Buffer.byteLength(shown) <= cap, `${Buffer.byteLength(shown)} bytes shown`);
      assert.ok(!shown.includes('\uFFFD'));
      assert.match(stderrOf(many.outputs), /\[output truncated: this cell printed more than/);
    } finally {
      await kernel.dispose();
    }
  });
});

describe('interrupt, restart and crashes', () => {
  test('while (true) {} is stopped within the interrupt timeout; the cell says state was lost; the kernel works after', async () => {
    const interruptTimeoutMs = 1000;
    const kernel = await startKernel({ interruptTimeoutMs });
    try {
      await value(kernel, 'const before = "defined";');
      const pidBefore = kernel.pid;
      const lost = new Promise<string>((resolve) => { kernel.onDidLoseState((e) => resolve(e.reason)); });
      let spinning!: () => void;
      const isSpinning = new Promise<void>((resolve) => { spinning = resolve; });
      const running = run(kernel, 'console.log("spinning");\nwhile (true) {}', { onOutput: (o) => { if (o.kind === 'stream') spinning(); } });
      await isSpinning;
      const t0 = performance.now();
      await kernel.interrupt();
      const elapsed = performance.now() - t0;
      const { result, outputs } = await running;
      assert.ok(elapsed < interruptTimeoutMs + 1000, `stopped after ${Math.round(elapsed)} ms`);
      assert.equal(result.status, 'interrupted');
      assert.equal(result.stateLost, true);
      const error = outputs.at(-1);
      assert.ok(error?.kind === 'error');
      assert.match(error.error.message.replaceAll('\n', ' '), /did not stop within 1 s of the interrupt, so the kernel process was restarted\. State was lost/);
      // VS Code shows a cell's error unwrapped: every line must fit a narrow cell.
      const lines = error.error.stack.split('\n');
      assert.ok(lines.length >= 4 && lines.every((l) => l.length <= 64), `lines of ${lines.map((l) => l.length).join(', ')} characters:\n${error.error.stack}`);
      assert.match(lines[0]!, /^KernelRestarted: The cell did not stop/);
      assert.equal(await lost, 'interrupt');
      assert.equal(await value(kernel, 'typeof before'), 'undefined');
      assert.equal(await value(kernel, '1 + 1'), '2');
      assert.notEqual(kernel.pid, pidBefore);
      assert.equal(kernel.executionCount, 2, 'counting starts again in the new process');
    } finally {
      await kernel.dispose();
    }
  });

  test('a cell awaiting a timer, a polling loop or a request stops at once on interrupt, keeping state and process', async () => {
    // Long enough that a kill after the grace (the bug: any await but a grid call) is told apart from the answer.
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    const stalled = createServer(() => { /* never answers */ });
    await new Promise<void>((resolve) => stalled.listen(0, '127.0.0.1', resolve));
    const port = (stalled.address() as AddressInfo).port;
    try {
      await value(kernel, 'const x = 41;');
      const pid = kernel.pid;
      const lost: string[] = [];
      kernel.onDidLoseState((e) => lost.push(e.reason));
      const waits = {
        timer: 'await new Promise((r) => setTimeout(r, 600_000));',
        'polling loop': 'for (;;) await new Promise((r) => setTimeout(r, 20));',
        request: `await fetch("http://127.0.0.1:${port}/");`,
      };
      for (const [what, wait] of Object.entries(waits)) {
        let waiting!: () => void;
        const isWaiting = new Promise<void>((resolve) => { waiting = resolve; });
        const running = run(kernel, `console.log("waiting");\n${wait}`, { onOutput: (o) => { if (o.kind === 'stream') waiting(); } });
        await within(isWaiting, `${what}: the cell starting to wait`);
        await within(kernel.interrupt(), `${what}: the interrupt`);
        const { result, outputs } = await running;
        assert.equal(result.status, 'interrupted', what);
        assert.equal(result.stateLost, false, `${what}: the cell was awaiting; no restart was needed`);
        assert.equal(result.error?.code, 'GRID_ERR_ABORTED', what);
        const error = outputs.at(-1);
        assert.ok(error?.kind === 'error', what);
        assert.match(error.error.message, /interrupted/, what);
      }
      assert.equal(kernel.pid, pid, 'the same kernel process');
      assert.deepEqual(lost, []);
      assert.equal(await value(kernel, 'x + 1'), '42');
      assert.equal(kernel.executionCount, 5, 'counting went on');
    } finally {
      await kernel.dispose();
      stalled.closeAllConnections();
      await new Promise<void>((resolve) => stalled.close(() => resolve()));
    }
  });

  test('an interrupted cell\'s leftover code sees grid.signal aborted and its grid calls refused', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      let waiting!: () => void;
      const isWaiting = new Promise<void>((resolve) => { waiting = resolve; });
      const running = run(kernel, [
        'console.log("waiting");',
        // Released by the next cell: a timer would never fire for a cell interrupted meanwhile.
        'await new Promise((r) => { globalThis.release = r; });',
        'globalThis.after = { aborted: grid.signal.aborted, call: await grid.models().then(() => "ran", (e) => e.code) };',
      ].join('\n'), { onOutput: (o) => { if (o.kind === 'stream') waiting(); } });
      await within(isWaiting, 'the cell starting to wait');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.stateLost, false);
      // The next cell waits for the leftover to finish; grid.signal is the new cell's own, not aborted.
      assert.equal(await value(kernel, 'release();\nwhile (!globalThis.after) await new Promise((r) => setTimeout(r, 10)); [grid.signal.aborted, after.aborted, after.call].join()'),
        'false,true,GRID_ERR_ABORTED');
    } finally {
      await kernel.dispose();
    }
  });

  test('an interrupted cell\'s timers never fire: a sleep loop, setInterval, timers/promises and scheduler.wait stop, later cells\' timers run', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    const late: LateOutput[] = [];
    kernel.onDidEmitLateOutput((e) => late.push(e));
    try {
      let ticking!: () => void;
      const isTicking = new Promise<void>((resolve) => { ticking = resolve; });
      const running = run(kernel, [
        'import { setTimeout as sleep, scheduler } from "node:timers/promises";',
        'globalThis.ticks = 0;',
        'setInterval(() => { ticks++; }, 5);',
        '(async () => { for (;;) { await sleep(5); ticks++; } })();',
        '(async () => { for (;;) { await scheduler.wait(5); ticks++; } })();',
        'setImmediate(function again() { ticks++; setImmediate(again); });',
        'for (let i = 0; ; i++) { console.log("tick " + i); await new Promise((r) => setTimeout(r, 10)); }',
      ].join('\n'), { onOutput: (o) => { if (o.kind === 'stream') ticking(); } });
      await within(isTicking, 'the loop ticking');
      await within(kernel.interrupt(), 'the interrupt');
      const { result } = await running;
      assert.equal(result.status, 'interrupted');
      assert.equal(result.stateLost, false);
      const lateBefore = late.length;
      // This cell's own timers run; the interrupted cell's do not, for as long as it waits.
      assert.equal(await value(kernel, 'const t0 = ticks;\nawait new Promise((r) => setTimeout(r, 300));\nfor (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));\nticks - t0'), '0');
      assert.equal(late.length, lateBefore, `late output of the interrupted cell: ${JSON.stringify(late.slice(lateBefore))}`);
      assert.equal(late.length, 0, 'nothing printed after the interrupt');
    } finally {
      await kernel.dispose();
    }
  });

  test('only the cell\'s own timers stop with it: fetch and a library\'s module-level timer first used by an interrupted cell keep working', async () => {
    const nb = await notebookDir();
    // A library that lazily makes one module-wide timer, as undici (fetch) does.
    await writeFile(join(nb.dir, 'ticker.cjs'), 'let ticks = 0, timer;\nexports.start = () => { timer ??= setInterval(() => { ticks++; }, 10); };\nexports.ticks = () => ticks;\n');
    const server = createServer((_req, res) => res.end('ok'));
    server.keepAliveTimeout = 0; // the server never closes an idle socket: only the client's keep-alive timer does
    const closed: Array<() => void> = [];
    server.on('connection', (socket) => socket.on('close', () => closed.shift()?.()));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const kernel = await startKernel({ cwd: nb.dir, interruptTimeoutMs: 10_000 });
    try {
      const firstClosed = new Promise<void>((resolve) => closed.push(resolve));
      let looping!: () => void;
      const isLooping = new Promise<void>((resolve) => { looping = resolve; });
      const running = run(kernel, [
        `console.log(await fetch(${JSON.stringify(url)}).then((r) => r.text()));`,
        'const ticker = require("./ticker.cjs");',
        'ticker.start();',
        'for (;;) await new Promise((r) => setTimeout(r, 20));',
      ].join('\n'), { onOutput: (o) => { if (o.kind === 'stream') looping(); } });
      await within(isLooping, 'the cell fetching and looping');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.status, 'interrupted');
      await within(firstClosed, 'the first cell\'s idle keep-alive socket closing', 30_000);
      const secondClosed = new Promise<void>((resolve) => closed.push(resolve));
      assert.equal(await value(kernel, `await fetch(${JSON.stringify(url)}).then((r) => r.text())`), 'ok');
      // undici's keep-alive timer closes the idle socket only if the timer still fires after the interrupt.
      await within(secondClosed, 'a later cell\'s idle keep-alive socket closing', 30_000);
      assert.equal(await value(kernel, 'const t0 = ticker.ticks();\nawait new Promise((r) => setTimeout(r, 300));\nticker.ticks() > t0'), 'true');
    } finally {
      await kernel.dispose();
      server.close();
      await nb.remove();
    }
  });

  test('an interrupt while no cell runs, with an interrupted cell still printing, restarts the kernel and says so', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      await value(kernel, 'const kept = 1;');
      const pid = kernel.pid;
      let printing!: () => void;
      const isPrinting = new Promise<void>((resolve) => { printing = resolve; });
      const late: LateOutput[] = [];
      // Output counts toward the restart from 2 s after the interrupt, once there is more than one.
      let ended = Infinity;
      let leftoverLines = 0;
      kernel.onDidEmitLateOutput((e) => {
        late.push(e);
        if (e.output.kind === 'stream' && e.output.text.startsWith('io') && performance.now() - ended > 2500 && ++leftoverLines >= 2) printing();
      });
      // I/O callbacks are not timers: an interrupt does not stop this loop.
      const stop = new AbortController();
      const { result } = await run(kernel, 'const fs = require("node:fs");\n(async () => { for (let i = 0; ; i++) { await fs.promises.stat("."); if (i % 500 === 0) console.log("io " + i); } })();\nawait new Promise(() => {});',
        { language: 'javascript', signal: stop.signal, onOutput: (o) => { if (o.kind === 'stream') stop.abort(); } });
      ended = performance.now();
      assert.equal(result.status, 'interrupted');
      await within(isPrinting, 'the leftover loop printing after the interrupt');
      const lost = new Promise<string>((resolve) => { kernel.onDidLoseState((e) => resolve(e.reason)); });
      await kernel.interrupt();
      assert.equal(await within(lost, 'the restart'), 'interrupt');
      const notice = late.find((e) => e.output.kind === 'stream' && e.output.text.includes('restarted'));
      assert.ok(notice, 'the interrupted cell says the kernel was restarted');
      assert.equal(notice.executionCount, result.executionCount);
      assert.match(notice.output.kind === 'stream' ? notice.output.text.replaceAll('\n', ' ') : '', /restarted to stop what this cell left running.*State was lost/);
      assert.equal(await value(kernel, 'typeof kept'), 'undefined');
      assert.notEqual(kernel.pid, pid);
      // With nothing left printing, an interrupt of an idle kernel changes nothing.
      const pidAfter = kernel.pid;
      await value(kernel, 'const again = 2;');
      await kernel.interrupt();
      assert.equal(await value(kernel, 'again'), '2');
      assert.equal(kernel.pid, pidAfter);
    } finally {
      await kernel.dispose();
    }
  });

  test('a second Stop after an interrupted cell printed once (its child\'s exit callback) keeps the state', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      await value(kernel, 'const model = "trained for an hour";');
      const pid = kernel.pid;
      let lost = '';
      kernel.onDidLoseState((e) => { lost = e.reason; });
      let toolEnded!: () => void;
      const isToolEnded = new Promise<void>((resolve) => { toolEnded = resolve; });
      kernel.onDidEmitLateOutput((e) => { if (e.output.kind === 'stream' && e.output.text.includes('tool ended')) toolEnded(); });
      let started!: () => void;
      const isStarted = new Promise<void>((resolve) => { started = resolve; });
      const running = run(kernel, [
        'console.log("running the tool");',
        'await new Promise((resolve) => require("node:child_process").execFile("sleep", ["30"], (err) => { console.log("tool ended:", err?.signal ?? "ok"); resolve(); }));',
      ].join('\n'), { language: 'javascript', onOutput: (o) => { if (o.kind === 'stream') started(); } });
      await within(isStarted, 'the tool starting');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.status, 'interrupted');
      await within(isToolEnded, 'the tool\'s exit callback printing');
      await kernel.interrupt(); // the second click on Stop, nothing running
      assert.equal(await value(kernel, 'model'), 'trained for an hour');
      assert.equal(lost, '');
      assert.equal(kernel.pid, pid);
    } finally {
      await kernel.dispose();
    }
  });

  test('child processes an interrupted cell started are stopped; their output does not reach later cells', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      let started!: () => void;
      const isStarted = new Promise<void>((resolve) => { started = resolve; });
      const running = run(kernel, [
        'const cp = require("node:child_process");',
        'const c = cp.spawn("sh", ["-c", "while true; do echo LEFTOVER; sleep 0.05; done"], { stdio: ["ignore", "inherit", "inherit"] });',
        'globalThis.pids = [c.pid, require("node:util").promisify(cp.exec)("sleep 600").child.pid, cp.execFile("sleep", ["600"]).pid];',
        'console.log("started");',
        'await new Promise((r) => c.on("exit", r));',
      ].join('\n'), { language: 'javascript', onOutput: (o) => { if (o.kind === 'stream') started(); } });
      await within(isStarted, 'the children starting');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.stateLost, false);
      // Waits (in the kernel) until every child is gone, for at most 20 s (SIGKILL comes after 1 s).
      const gone = await run(kernel, 'const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };\nconst until = Date.now() + 20_000;\nwhile (pids.some(alive) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));\nawait new Promise((r) => setTimeout(r, 200));\n`${pids.filter(alive).length} alive`', { language: 'javascript' });
      assert.equal(gone.result.status, 'ok');
      assert.deepEqual(plainOf(gone.outputs), ['0 alive']);
      assert.equal(stdoutOf(gone.outputs), '', 'no LEFTOVER in a later cell');
    } finally {
      await kernel.dispose();
    }
  });

  // Linux: processes are read from /proc (a zombie counts as gone: only its exit status is left).
  const procStat = (pid: number): string | undefined => { try { return readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return undefined; } };
  const isAlive = (pid: number): boolean => { const stat = procStat(pid); return stat !== undefined && !/^\d+ \(.*\) Z /s.test(stat); };
  /** Processes whose stat field `field` (4: parent) is `id`. */
  const pidsBy = (field: 4, id: number): number[] => readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number)
    .filter((pid) => { const stat = procStat(pid); return stat !== undefined && Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[field - 3]) === id; });
  const childPids = (ppid: number): number[] => pidsBy(4, ppid);
  async function until(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
    const deadline = performance.now() + ms;
    while (!condition()) {
      if (performance.now() > deadline) throw new Error(`${what}: still waiting after ${ms / 1000} s`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  test('what a shell a cell started runs dies with it on interrupt; a child left running dies with a restart', { skip: process.platform !== 'linux' }, async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      let shellPid = 0;
      let shellStarted!: () => void;
      const isStarted = new Promise<void>((resolve) => { shellStarted = resolve; });
      const running = run(kernel, [
        'const cp = require("node:child_process");',
        'const shell = cp.exec("sleep 30; echo done");',
        'console.log(String(shell.pid));',
        'await new Promise((r) => shell.on("exit", r));',
      ].join('\n'), { language: 'javascript', onOutput: (o) => { if (o.kind === 'stream') { shellPid = Number(o.text); shellStarted(); } } });
      await within(isStarted, 'the shell starting');
      let sleepPid = 0;
      await until(() => { sleepPid = childPids(shellPid)[0] ?? 0; return sleepPid > 0; }, 'the shell starting sleep 30');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.stateLost, false);
      await until(() => !isAlive(sleepPid), `sleep 30 (pid ${sleepPid}, started by the interrupted cell's shell) ending`);

      const left = Number(await value(kernel, 'const cp2 = require("node:child_process");\nconst left = cp2.spawn("sleep", ["30"]);\nleft.pid'));
      assert.ok(isAlive(left), 'the child runs while its cell is done');
      await kernel.restart();
      await until(() => !isAlive(left), `sleep 30 (pid ${left}) left running by a cell, after the restart`);
    } finally {
      await kernel.dispose();
    }
  });

  test('a cell blocked in execSync is stopped by a restart, and the command it ran dies with it', { skip: process.platform !== 'linux' }, async () => {
    const nb = await notebookDir();
    const kernel = await startKernel({ cwd: nb.dir, interruptTimeoutMs: 1000 });
    try {
      await kernel.start();
      const workerPid = kernel.pid!;
      const running = run(kernel, 'require("node:child_process").execSync("sleep 43")', { language: 'javascript' });
      let sleepPid = 0;
      await until(() => { const below = childPids(workerPid);
        sleepPid = [...below, ...below.flatMap(childPids)].find((pid) => procStat(pid)?.includes('(sleep)')) ?? 0; return sleepPid > 0; }, 'execSync starting sleep 43');
      await within(kernel.interrupt(), 'the interrupt');
      assert.equal((await running).result.stateLost, true);
      await until(() => !isAlive(sleepPid), `sleep 43 (pid ${sleepPid}) of the killed kernel process ending`);
    } finally {
      await kernel.dispose();
      await nb.remove();
    }
  });

  test('a host killed without a word (SIGKILL) while a cell spins takes the kernel process and what its cells started with it', { skip: process.platform !== 'linux' }, async () => {
    const nb = await notebookDir();
    // The host in a process of its own (as VS Code's extension host or a Jupyter kernel is), killed outright.
    const script = join(nb.dir, 'host.mts');
    await writeFile(script, [
      `import { KernelHost } from ${JSON.stringify(join(__dirname, '../../src/kernel/index.ts'))};`,
      `const k = new KernelHost({ workerPath: ${JSON.stringify(await workerBundle())}, cwd: ${JSON.stringify(nb.dir)} });`,
      'await k.start();',
      'void k.execute("const c = require(\'node:child_process\').spawn(\'sleep\', [\'60\']);\\nconsole.log(process.pid + \' \' + c.pid);\\nawait new Promise((r) => setTimeout(r, 100));\\nfor (;;) {}", { language: "javascript", onOutput: (o) => { if (o.kind === "stream") process.stdout.write(o.text); } });',
      'setInterval(() => {}, 60_000);',
    ].join('\n'));
    const host = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const [workerPid, childPid] = await within(new Promise<number[]>((resolve) => {
        let out = '';
        host.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; const m = /(\d+) (\d+)\n/.exec(out); if (m) resolve([Number(m[1]), Number(m[2])]); });
      }), 'the cell printing its pids');
      // Spinning (its CPU time climbs by 0.3 s): the kernel process's event loop never handles the host's goodbye.
      const cpuTicks = () => { const f = (procStat(workerPid) ?? '').split(') ')[1]?.split(' ') ?? []; return Number(f[11]) + Number(f[12]); };
      const before = cpuTicks();
      await until(() => cpuTicks() >= before + 30, 'the cell spinning');
      host.kill('SIGKILL');
      await until(() => !isAlive(workerPid), `the kernel process (pid ${workerPid}) ending after its host was killed`);
      await until(() => !isAlive(childPid), `sleep 60 (pid ${childPid}) that its cell started ending`);
    } finally {
      host.kill('SIGKILL');
      await nb.remove();
    }
  });

  test('leftover code of an interrupted cell finds it interrupted even after 70 more cells', async () => {
    const kernel = await startKernel({ interruptTimeoutMs: 10_000 });
    try {
      let waiting!: () => void;
      const isWaiting = new Promise<void>((resolve) => { waiting = resolve; });
      const running = run(kernel, [
        'const fs = require("node:fs");',
        'globalThis.seen = [];',
        // fs, not timers: a timer of an interrupted cell would never fire at all.
        '(async () => { while (!globalThis.stopSeen) { await fs.promises.stat("."); seen.push(grid.signal.aborted); } })();',
        'console.log("waiting");',
        'await new Promise(() => {});',
      ].join('\n'), { language: 'javascript', onOutput: (o) => { if (o.kind === 'stream') waiting(); } });
      await within(isWaiting, 'the cell starting to wait');
      await within(kernel.interrupt(), 'the interrupt');
      await running;
      for (let i = 0; i < 70; i++) await value(kernel, '1');
      assert.equal(await value(kernel, 'seen.length = 0;\nwhile (seen.length < 20) await new Promise((r) => setTimeout(r, 5));\nglobalThis.stopSeen = true;\nJSON.stringify([...new Set(seen)])'), '[true]');
    } finally {
      await kernel.dispose();
    }
  });

  test('restart clears state and the execution count, and gives a new process', async () => {
    const kernel = await startKernel();
    try {
      await value(kernel, 'const kept = 1;');
      assert.equal(await value(kernel, 'kept'), '1');
      const pid = kernel.pid;
      const statuses: string[] = [];
      kernel.onDidChangeStatus((s) => statuses.push(s));
      await kernel.restart();
      assert.notEqual(kernel.pid, pid);
      assert.deepEqual(statuses, ['stopped', 'starting', 'idle']);
      const { result, outputs } = await run(kernel, 'typeof kept');
      assert.deepEqual(statuses.slice(3), ['busy', 'idle']);
      assert.equal(result.executionCount, 1);
      assert.deepEqual(plainOf(outputs), ['undefined']);
    } finally {
      await kernel.dispose();
    }
  });

  test('a cell that ends the process reports that state was lost, and the next cell gets a fresh kernel', async () => {
    const kernel = await startKernel();
    try {
      await value(kernel, 'const doomed = 1;');
      const { result } = await run(kernel, 'process.exit(3)');
      assert.equal(result.status, 'error');
      assert.equal(result.stateLost, true);
      assert.equal(result.error?.name, 'KernelDied');
      assert.match(result.error!.message.replaceAll('\n', ' '), /exited \(code 3\).*State was lost/);
      assert.ok(result.error!.stack.split('\n').every((l) => l.length <= 64), result.error!.stack);
      assert.equal(await value(kernel, 'typeof doomed'), 'undefined');
    } finally {
      await kernel.dispose();
    }
  });

  test('dispose is idempotent, ends the process, and using the kernel afterwards is a coded error', async () => {
    const kernel = await startKernel();
    await kernel.start();
    const pid = kernel.pid!;
    await kernel.dispose();
    await kernel.dispose();
    assert.equal(kernel.status, 'disposed');
    assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, 'the kernel process is gone');
    assert.throws(() => kernel.execute('1'), { code: 'GRID_ERR_DISPOSED' });
  });

  test('a notebook folder that no longer exists fails each cell naming the folder, and dispose returns', async () => {
    const nb = await notebookDir();
    await nb.remove(); // the notebook's folder was deleted or renamed
    const kernel = await startKernel({ cwd: nb.dir });
    try {
      for (let i = 0; i < 2; i++) {
        const { result, outputs } = await within(run(kernel, '1'), `cell ${i}`);
        assert.equal(result.status, 'error');
        assert.equal(result.error?.name, 'KernelStartFailed');
        assert.equal(result.error?.code, 'GRID_ERR_NOT_FOUND');
        assert.ok(result.error!.message.includes(`the notebook's folder ${nb.dir} does not exist`), result.error!.message);
        assert.equal(outputs.filter((o) => o.kind === 'error').length, 1);
      }
      assert.equal(kernel.status, 'stopped');
    } finally {
      await within(kernel.dispose(), 'dispose', 20_000);
    }
  });

  test('a Node binary that cannot be started fails the cell naming it, and dispose returns', async () => {
    const kernel = await startKernel({ execPath: '/nonexistent/node' });
    try {
      const { result } = await within(run(kernel, '1'), 'the cell');
      assert.equal(result.status, 'error');
      assert.equal(result.error?.name, 'KernelStartFailed');
      assert.match(result.error!.message, /could not be started \(\/nonexistent\/node in .*\): spawn \/nonexistent\/node ENOENT/);
      assert.equal(kernel.status, 'stopped');
      assert.equal((await within(run(kernel, '2'), 'the second cell')).result.error?.name, 'KernelStartFailed', 'the next cell tries again and says so');
    } finally {
      await within(kernel.dispose(), 'dispose', 20_000);
    }
  });

  test('malformed messages a cell sends on the kernel channel are logged and dropped; the host and the cell go on', async () => {
    const warnings: string[] = [];
    const uncaught: Error[] = [];
    const onUncaught = (err: Error) => uncaught.push(err);
    process.on('uncaughtException', onUncaught);
    const kernel = await startKernel({ logger: { debug() {}, warn: (m, d) => warnings.push(`${m} ${JSON.stringify(d)}`), error: (m) => warnings.push(m) } });
    try {
      await value(kernel, '1');
      const bad = [
        '{ type: "output", execId: 2 }',
        '{ type: "output", execId: 2, output: { kind: "display" } }',
        '{ type: "output", execId: 2, output: { kind: "stream", stream: "stdout", text: 5 } }',
        '{ type: "output", execId: 2, output: { kind: "error", error: "boom" } }',
        '{ type: "executeReply", execId: 2, ok: false }',
        '{ type: "hostCall", execId: 2, callId: "x", method: "models" }',
        '{ type: "pong" }',
      ];
      const { result, outputs } = await run(kernel, `for (const m of [${bad.join(', ')}]) process.send(m);\nconsole.log("still here");\n2`);
      assert.equal(result.status, 'ok', result.error?.stack);
      assert.equal(stdoutOf(outputs), 'still here\n');
      assert.deepEqual(plainOf(outputs), ['2']);
      assert.equal(warnings.filter((w) => w.startsWith('kernel process sent a malformed message; ignored')).length, bad.length, warnings.join('\n'));
      assert.deepEqual(uncaught, []);
      assert.equal(await value(kernel, '3'), '3');
    } finally {
      process.off('uncaughtException', onUncaught);
      await kernel.dispose();
    }
  });

  test('a worker path that does not exist fails the cell with a clear message', async () => {
    const kernel = await startKernel({ workerPath: '/nonexistent/kernel-worker.js' });
    try {
      const { result } = await run(kernel, '1');
      assert.equal(result.status, 'error');
      assert.equal(result.error?.name, 'KernelStartFailed');
      assert.match(result.error!.message, /exited .* before it was ready.*Cannot find module/s);
    } finally {
      await kernel.dispose();
    }
  });
});
