// `grid.*` calls from cells travel kernel process → host → GridBridge. The bridge here forwards
// over real HTTP to a server on 127.0.0.1 port 0 that the test answers by hand, so the test sees
// exactly what a node would: when a call arrives, and when it is cancelled. Every wait has a deadline
// (within, and server.next's own), so a regression fails here instead of hanging the run.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { CellOutput, KernelHost } from '../../src/kernel';
import { gridServer, plainOf, run, startKernel, stdoutOf, value, WAIT_MS, within } from './kernel-harness';

describe('grid calls through the bridge', () => {
  let server: Awaited<ReturnType<typeof gridServer>>;
  let kernel: KernelHost;

  before(async () => {
    server = await gridServer();
    // Longer than any wait here: passing proves a cell stopped by itself, never by a kill.
    kernel = await startKernel({ bridge: server.bridge, interruptTimeoutMs: 2 * WAIT_MS });
    await within(kernel.start(), 'the kernel starting');
  });

  after(async () => {
    await within(kernel.dispose(), 'the kernel disposing');
    await within(server.close(), 'the grid stand-in closing');
  });

  test('console output reaches the host while the cell is still waiting on a grid call', async () => {
    let sawFirstLine!: () => void;
    const firstLine = new Promise<void>((resolve) => { sawFirstLine = resolve; });
    let finished = false;
    const running = run(kernel, 'console.log("listing models");\nconst models = await grid.models();\nconsole.log("found", models.length)', {
      onOutput: (o: CellOutput) => { if (o.kind === 'stream' && o.text.includes('listing models')) sawFirstLine(); },
    }).then((r) => { finished = true; return r; });
    const held = await server.next();
    assert.equal(held.method, 'models');
    await within(firstLine, 'the first console line');
    assert.equal(finished, false, 'the first line arrived while the cell was blocked on the grid');
    held.reply({ value: ['mnist', 'iris'] });
    const { result, outputs } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'ok');
    assert.equal(stdoutOf(outputs), 'listing models\nfound 2\n');
  });

  test('arguments reach the bridge, and a tensor result arrives in the cell as a typed array', async () => {
    const running = run(kernel, 'const out = await grid.infer("mnist", { x: [0, 1] });\n[out.data instanceof Float32Array, out.dims.join("x")]');
    const held = await server.next();
    assert.equal(held.method, 'infer');
    assert.deepEqual(held.args, ['mnist', { x: [0, 1] }]);
    held.reply({ tensor: { dtype: 'float32', dims: [1, 3], data: [0.1, 0.7, 0.2] } });
    const { result, outputs } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'ok');
    assert.equal(plainOf(outputs).at(-1), "[ true, '1x3' ]");
    assert.equal(await within(value(kernel, 'out'), 'the cell finishing'), 'float32 [1, 3]\n[[0.1, 0.7, 0.2]]');
  });

  test('a grid error keeps its code and points at the calling line', async () => {
    const running = run(kernel, 'const name = "nope";\nconst bytes = await grid.download(name);');
    (await server.next()).reply({ error: { code: 'GRID_ERR_NOT_FOUND', message: 'model "nope" is not on node 127.0.0.1' } });
    const { result } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.name, 'GridError');
    assert.equal(result.error?.code, 'GRID_ERR_NOT_FOUND');
    assert.equal(result.error?.message, 'model "nope" is not on node 127.0.0.1');
    assert.equal(result.error?.line, 2);
    assert.match(result.error!.stack, /^GridError \[GRID_ERR_NOT_FOUND\]: model "nope"/);
    assert.match(result.error!.stack, new RegExp(`at Cell \\[${result.executionCount}\\]:2:`));
  });

  test('arguments that cannot cross to the host are a coded error naming the call', async () => {
    const { result } = await within(run(kernel, 'const callback = () => 1;\nawait grid.serve("model.onnx", { onProgress: callback });'), 'the cell finishing');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(result.error!.message, /grid\.serve: its arguments cannot be sent to the host/);
    assert.equal(result.error?.line, 2);
  });

  test('a result that cannot cross to the kernel is a coded error naming the call; the kernel lives on', async () => {
    const running = run(kernel, 'const before = 1;\nconst listed = await grid.models();');
    (await server.next()).reply({ value: 'listed', unsendable: true });
    const { result } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'error');
    assert.equal(result.error?.code, 'GRID_ERR_INTERNAL');
    assert.match(result.error!.message, /^the result of grid\.models cannot be sent to the kernel: /);
    assert.equal(result.error?.line, 2);
    assert.equal(await within(value(kernel, 'before'), 'the cell finishing'), '1');
  });

  test('output the bridge emits during a call (training progress) lands in the calling cell', async () => {
    const running = run(kernel, 'const summary = await grid.train("mnist", "digits");\nsummary');
    const held = await server.next();
    assert.equal(held.method, 'train');
    held.reply({ value: 'trained 2 epochs', progress: ['epoch 1 loss 0.50', 'epoch 2 loss 0.25'] });
    const { result, outputs } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'ok');
    assert.equal(stdoutOf(outputs), 'epoch 1 loss 0.50\nepoch 2 loss 0.25\n');
    assert.deepEqual(plainOf(outputs), ['trained 2 epochs']);
  });

  test('interrupting a cell that awaits grid calls cancels each at the server; the cell stops and state stays', async () => {
    await within(value(kernel, 'const kept = "still here";'), 'the cell finishing');
    const running = run(kernel, 'const [a, b] = await Promise.all([grid.infer("m1", 1), grid.datasets()]);');
    const calls = [await server.next(), await server.next()];
    assert.deepEqual(calls.map((c) => c.method).sort(), ['datasets', 'infer']);
    await within(kernel.interrupt(), 'the interrupt');
    await within(Promise.all(calls.map((c) => c.closed)), 'the server seeing both calls cancelled'); // both requests were torn down on the server side
    const { result } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'interrupted');
    assert.equal(result.stateLost, false, 'the cell yielded; no restart was needed');
    assert.equal(result.error?.code, 'GRID_ERR_ABORTED');
    assert.match(result.error!.message, /cancelled: the cell was interrupted/);
    assert.equal(result.error?.line, 1);
    assert.equal(await within(value(kernel, 'kept'), 'the cell finishing'), 'still here');
  });

  test('a cell can watch grid.signal to stop its own waits on interrupt', async () => {
    let waiting!: () => void;
    const isWaiting = new Promise<void>((resolve) => { waiting = resolve; });
    const running = run(kernel, [
      'console.log("waiting");',
      'await new Promise((_, reject) => grid.signal.addEventListener("abort", () => reject(grid.signal.reason)));',
    ].join('\n'), { onOutput: (o) => { if (o.kind === 'stream') waiting(); } });
    await within(isWaiting, 'the cell starting to wait');
    await within(kernel.interrupt(), 'the interrupt');
    const { result } = await within(running, 'the cell finishing');
    assert.equal(result.status, 'interrupted');
    assert.equal(result.stateLost, false);
    assert.equal(result.error?.code, 'GRID_ERR_ABORTED');
  });
});
