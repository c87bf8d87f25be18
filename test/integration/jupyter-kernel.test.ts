// The Grid (TypeScript) kernel under real Jupyter (Debian's jupyter-client, nbclient, nbconvert; the
// project's setup installs them): `grid kernel install` makes `jupyter kernelspec list` show it,
// jupyter_client drives it over ZeroMQ (test/integration/jupyter/drive_kernel.py), and
// `jupyter nbconvert --execute` runs a notebook through it against this user's local node.
// Every Jupyter and grid path points into a temp dir, so nothing of the machine's is read or written.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { build } from 'esbuild';
import { mlpModel, tempDir } from '../helpers/node-fixtures';
import { startNodeScript } from '../helpers/processes';
import { packageExtension, TARGETS, zeromqLines } from '../../scripts/package.mjs';

const ROOT = path.join(__dirname, '../..');
const DRIVER = path.join(__dirname, 'jupyter', 'drive_kernel.py');
const nodeScript = path.join(ROOT, 'dist/grid-node.js');

/** The Python whose jupyter_client, nbclient and nbconvert the tests use; a clear failure when none has them. */
function jupyterPython(): string {
  const candidates = [process.env.GRID_JUPYTER_PYTHON, 'python3', '/usr/bin/python3'].filter((c): c is string => !!c);
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import jupyter_client, nbclient, nbconvert'], { encoding: 'utf8' });
    if (r.status === 0) return python;
  }
  throw new Error(`Jupyter is not installed: none of ${candidates.join(', ')} can import jupyter_client, nbclient and nbconvert. `
    + 'Run `npm run setup` (it installs the Debian packages jupyter-client, python3-nbclient and jupyter-nbconvert), '
    + 'or set GRID_JUPYTER_PYTHON to a Python that has them.');
}

/** The CLI, the Jupyter kernel and its worker bundled as scripts/build.mjs bundles them, from this tree. */
async function bundle(dir: string): Promise<{ cli: string; kernel: string }> {
  const common = {
    bundle: true, platform: 'node' as const, target: 'node20', format: 'cjs' as const, sourcemap: true, logLevel: 'warning' as const,
    external: ['vscode', 'onnxruntime-node', 'node-sqlite3-wasm', 'bufferutil', 'esbuild', 'zeromq'],
  };
  const dist = path.join(dir, 'dist');
  await Promise.all([
    build({ ...common, entryPoints: [path.join(ROOT, 'src/cli/grid.ts')], outfile: path.join(dist, 'grid.js') }),
    build({ ...common, entryPoints: [path.join(ROOT, 'src/kernel/jupyter/main.ts')], outfile: path.join(dist, 'grid-kernel.js') }),
    build({ ...common, entryPoints: [path.join(ROOT, 'src/kernel/worker.ts')], outfile: path.join(dist, 'kernel-worker.js') }),
  ]);
  // media/ beside dist/, as in the repo and the package: the logo, and the samples the kernel points GRID_SAMPLES at.
  fs.symlinkSync(path.join(ROOT, 'media'), path.join(dir, 'media'));
  return { cli: path.join(dist, 'grid.js'), kernel: path.join(dist, 'grid-kernel.js') };
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { out += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, out, err }));
  });
}

let python: string;
let work: string;
let env: NodeJS.ProcessEnv;
let cli: string;
let kernelScript: string;

before(async () => {
  python = jupyterPython();
  fs.mkdirSync(path.join(ROOT, '.test-work'), { recursive: true });
  // Under the repo, so the bundles' external packages (zeromq, esbuild) resolve from its node_modules.
  const built = fs.mkdtempSync(path.join(ROOT, '.test-work', 'jupyter-'));
  process.once('exit', () => fs.rmSync(built, { recursive: true, force: true }));
  ({ cli, kernel: kernelScript } = await bundle(built));
  work = tempDir('grid-jupyter-');
  const home = path.join(work, 'home');
  fs.mkdirSync(home);
  env = {
    PATH: process.env.PATH, LANG: 'C.UTF-8', HOME: home,
    JUPYTER_DATA_DIR: path.join(work, 'jupyter-data'), JUPYTER_CONFIG_DIR: path.join(work, 'jupyter-config'),
    JUPYTER_RUNTIME_DIR: path.join(work, 'jupyter-runtime'), JUPYTER_PATH: path.join(work, 'prefix', 'share', 'jupyter'),
    JUPYTER_PLATFORM_DIRS: '1', IPYTHONDIR: path.join(work, 'ipython'),
    XDG_DATA_HOME: path.join(work, 'xdg-data'), XDG_CONFIG_HOME: path.join(work, 'xdg-config'), XDG_RUNTIME_DIR: path.join(work, 'xdg-runtime'),
    GRID_RUNTIME_DIR: path.join(work, 'grid-runtime'), GRID_DATA_DIR: path.join(work, 'grid-data'), GRID_ADMIN_PASSWORD: '',
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
});

after(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

async function kernelspecs(): Promise<Record<string, { resource_dir: string; spec: Record<string, unknown> }>> {
  const r = await run(python, ['-m', 'jupyter', 'kernelspec', 'list', '--json'], env);
  assert.equal(r.code, 0, r.err);
  return (JSON.parse(r.out) as { kernelspecs: Record<string, { resource_dir: string; spec: Record<string, unknown> }> }).kernelspecs;
}

test('grid kernel install --prefix / --user: `jupyter kernelspec list` shows Grid (TypeScript); uninstall removes it', async () => {
  const prefix = path.join(work, 'prefix');
  const installed = await run(process.execPath, [cli, '--json', 'kernel', 'install', '--prefix', prefix], env);
  assert.equal(installed.code, 0, installed.err);
  let specs = await kernelspecs();
  const spec = specs['grid-typescript'];
  assert.ok(spec, `grid-typescript missing from ${Object.keys(specs).join(', ')}`);
  assert.equal(fs.realpathSync(spec.resource_dir), fs.realpathSync(path.join(prefix, 'share/jupyter/kernels/grid-typescript')));
  assert.equal(spec.spec.display_name, 'Grid (TypeScript)');
  assert.equal(spec.spec.language, 'typescript');
  assert.equal(spec.spec.interrupt_mode, 'message');
  assert.deepEqual(spec.spec.argv, [process.execPath, kernelScript, '{connection_file}']);
  assert.ok(fs.existsSync(path.join(spec.resource_dir, 'logo-svg.svg')), 'the kernelspec has the logo');

  const removed = await run(process.execPath, [cli, 'kernel', 'uninstall', '--prefix', prefix], env);
  assert.equal(removed.code, 0, removed.err);
  specs = await kernelspecs();
  assert.equal(specs['grid-typescript'], undefined);
  const again = await run(process.execPath, [cli, 'kernel', 'uninstall', '--prefix', prefix], env);
  assert.equal(again.code, 1);
  assert.match(again.err, /GRID_ERR_NOT_FOUND: no grid-typescript kernelspec/);

  // The default is per user (JUPYTER_DATA_DIR here); the rest of this file runs that install.
  const user = await run(process.execPath, [cli, 'kernel', 'install'], env);
  assert.equal(user.code, 0, user.err);
  assert.match(user.out, new RegExp(`installed kernelspec grid-typescript in ${path.join(work, 'jupyter-data', 'kernels', 'grid-typescript')}`));
  assert.ok((await kernelspecs())['grid-typescript']);
});

interface Output { type: string; name?: string; text?: string; data?: Record<string, unknown>; transient?: { display_id?: string }; traceback?: string[]; ename?: string; execution_count?: number }
interface Ran { reply: Record<string, unknown> & { status: string; execution_count: number; traceback?: string[] }; outputs: Output[] }
interface Report {
  kernel_info: Record<string, unknown> & { language_info: { name: string } };
  cells: Ran[];
  complete_member: { matches: string[]; cursor_start: number; cursor_end: number };
  complete_global: { matches: string[] };
  inspect: { found: boolean; data: Record<string, string> };
  inspect_missing: { found: boolean };
  is_complete: Record<'open' | 'done' | 'bad', { status: string; indent?: string }>;
  silent: Record<'before' | 'silent' | 'no_history' | 'after', Ran>;
  user_expressions: Record<'ok' | 'failed_cell' | 'after', Ran>;
  after_forged: Ran;
  after_replay: Ran;
  comm_info: { status: string; comms: Record<string, unknown> };
  stop_on_error: string[];
  interrupt_async: { reply: Ran['reply'] };
  after_interrupt_async: Ran;
  interrupt_loop: { reply: Ran['reply']; while_running: string | null };
  after_interrupt_loop: Ran;
  exit_cell: Ran;
  after_exit_cell: Ran;
  round_trip_ms?: { n: number; p50: number; p90: number };
  restart: { new_process: boolean; old_cell_process_alive: boolean; after: Ran };
  cell_process_alive: boolean;
  shutdown_reply: { status: string; restart: boolean };
  exit_code: number;
}

const plain = (ran: Ran) => ran.outputs.find((o) => o.type === 'execute_result')?.data?.['text/plain'];

describe('through jupyter_client (KernelManager, BlockingKernelClient)', () => {
  let report: Report;

  before(async () => {
    const nb = path.join(work, 'protocol-nb');
    fs.mkdirSync(nb);
    if (!fs.existsSync(path.join(work, 'jupyter-data/kernels/grid-typescript/kernel.json'))) {
      const r = await run(process.execPath, [cli, 'kernel', 'install'], env);
      assert.equal(r.code, 0, r.err);
    }
    const roundTrips = process.env.GRID_JUPYTER_ROUND_TRIPS ?? '200';
    const r = await run(python, [DRIVER, nb, roundTrips], env);
    assert.equal(r.code, 0, `drive_kernel.py failed:\n${r.err}`);
    report = JSON.parse(r.out) as Report;
    if (report.round_trip_ms) {
      process.stderr.write(`jupyter execute round trip of a trivial cell: p50 ${report.round_trip_ms.p50.toFixed(2)} ms, p90 ${report.round_trip_ms.p90.toFixed(2)} ms (n=${report.round_trip_ms.n})\n`);
    }
  });

  test('a silent execution publishes nothing and takes no execution count; neither does one with store_history false', () => {
    const { before: first, silent, no_history: noHistory, after: next } = report.silent;
    const n = first.reply.execution_count;
    assert.deepEqual([silent.reply.status, silent.reply.execution_count, silent.outputs], ['ok', n, []], 'silent: no execute_input, stream or result, the count unchanged');
    assert.deepEqual([noHistory.reply.execution_count, plain(noHistory)], [n, '14']);
    assert.deepEqual([next.reply.execution_count, plain(next)], [n + 1, '8'], 'the silent cell ran in the same namespace, and the next cell counts on from the last counted one');
  });

  test('user_expressions are evaluated after the cell, in its namespace, per the Jupyter spec', () => {
    const { ok, failed_cell: failed, after: next } = report.user_expressions;
    const ue = ok.reply.user_expressions as Record<string, Record<string, unknown>>;
    assert.deepEqual(ue.sum, { status: 'ok', data: { 'text/plain': '2' }, metadata: {} });
    assert.deepEqual(ue.awaited, { status: 'ok', data: { 'text/plain': '3' }, metadata: {} });
    assert.equal(ue.object!.status, 'ok');
    assert.match((ue.object!.data as Record<string, string>)['text/plain']!, /b: 1/);
    assert.equal(ue.bad!.status, 'error');
    assert.equal(ue.bad!.ename, 'TypeError');
    assert.match(ue.bad!.evalue as string, /undefined/);
    // The expressions print nothing and take no count: only the cell's own output, the next cell counts on by one.
    assert.deepEqual(ok.outputs.filter((o) => o.type !== 'execute_input').map((o) => [o.type, o.text]), [['stream', 'ran\n']]);
    assert.deepEqual(failed.reply.user_expressions, {}, 'not evaluated after a failed cell (as IPython)');
    assert.equal(next.reply.execution_count, failed.reply.execution_count + 1);
    assert.equal(failed.reply.execution_count, ok.reply.execution_count + 1);
  });

  test('kernel_info names the kernel and TypeScript', () => {
    assert.equal(report.kernel_info.status, 'ok');
    assert.equal(report.kernel_info.implementation, 'grid-typescript');
    assert.equal(report.kernel_info.protocol_version, '5.3');
    assert.equal(report.kernel_info.language_info.name, 'typescript');
  });

  test('execute: counts, state across cells, the last value, top-level await and stream output', () => {
    const [declare, value, awaited] = report.cells;
    assert.deepEqual(report.cells.map((c) => c.reply.execution_count), [1, 2, 3, 4, 5, 6]);
    assert.equal(declare!.reply.status, 'ok');
    assert.deepEqual(declare!.outputs.map((o) => o.type), ['execute_input']);
    assert.equal(plain(value!), '42');
    assert.equal(value!.outputs.find((o) => o.type === 'execute_result')?.execution_count, 2);
    assert.deepEqual(awaited!.outputs.filter((o) => o.type === 'stream').map((o) => [o.name, o.text]), [['stdout', 'awaited 41\n']]);
  });

  test("errors point at the cell's own lines: a runtime error after TypeScript-only lines, a syntax error", () => {
    const runtime = report.cells[3]!;
    assert.equal(runtime.reply.status, 'error');
    assert.equal(runtime.reply.ename, 'TypeError');
    assert.ok(runtime.reply.traceback!.some((l) => l.includes('Cell [4]:3:')), runtime.reply.traceback!.join('\n'));
    assert.deepEqual(runtime.outputs.find((o) => o.type === 'error')?.traceback, runtime.reply.traceback);
    const syntax = report.cells[4]!;
    assert.equal(syntax.reply.ename, 'SyntaxError');
    assert.ok(syntax.reply.traceback!.some((l) => l.includes('Cell [5]:2:9')), syntax.reply.traceback!.join('\n'));
  });

  test('display: HTML, a tensor as PNG, a display updated in place, JSON as a JSON value', () => {
    const outputs = report.cells[5]!.outputs.filter((o) => o.type !== 'execute_input');
    assert.deepEqual(outputs.map((o) => o.type), ['display_data', 'display_data', 'display_data', 'update_display_data', 'display_data']);
    assert.equal(outputs[0]!.data!['text/html'], '<b>bold</b>');
    const png = Buffer.from(outputs[1]!.data!['image/png'] as string, 'base64');
    assert.deepEqual([...png.subarray(1, 4)], [...Buffer.from('PNG')], 'image/png is base64 PNG bytes');
    assert.match(outputs[1]!.data!['text/plain'] as string, /^uint8 \[8, 8\]/);
    assert.equal(outputs[2]!.transient?.display_id, 'p');
    assert.deepEqual([outputs[3]!.transient?.display_id, outputs[3]!.data!['text/plain']], ['p', 'second']);
    assert.deepEqual(outputs[4]!.data!['application/json'], { a: [1, 2] });
  });

  test('complete and inspect from the live state; is_complete', () => {
    assert.ok(report.complete_member.matches.includes('models'), report.complete_member.matches.join(', '));
    assert.deepEqual([report.complete_member.cursor_start, report.complete_member.cursor_end], [5, 7]);
    assert.ok(report.complete_global.matches.includes('myVariable'), report.complete_global.matches.join(', '));
    assert.equal(report.inspect.found, true);
    assert.equal(report.inspect.data['text/plain'], 'x: number\n41');
    assert.equal(report.inspect_missing.found, false);
    assert.deepEqual(report.is_complete, { open: { status: 'incomplete', indent: '  ' }, done: { status: 'complete' }, bad: { status: 'invalid' } });
  });

  test('a message signed with the wrong key is dropped: its code never runs; a replayed message runs once', () => {
    assert.equal(plain(report.after_forged), 'undefined');
    assert.equal(plain(report.after_replay), '1');
  });

  test('comm_info answers; a failing cell aborts the cell queued behind it', () => {
    assert.deepEqual(report.comm_info, { status: 'ok', comms: {} });
    assert.deepEqual(report.stop_on_error, ['error', 'aborted']);
  });

  test('interrupt: an awaiting cell stops and the state survives; a `while (true) {}` (heartbeat still answering) restarts the cell process, and the reply says so', () => {
    assert.equal(report.interrupt_loop.while_running, 'are you there', 'the heartbeat answers while a cell spins');
    const seen = (r: Ran['reply']) => ({
      status: r.status, ename: r.ename, interrupted: r.grid_interrupted, restarted: r.grid_kernel_restarted,
      kernelFrames: r.traceback!.filter((l) => /kernel-worker|node:internal/.test(l)),
    });
    assert.deepEqual({
      async: seen(report.interrupt_async.reply), afterAsync: plain(report.after_interrupt_async),
      loop: seen(report.interrupt_loop.reply), afterLoop: plain(report.after_interrupt_loop), afterLoopCount: report.after_interrupt_loop.reply.execution_count,
    }, {
      async: { status: 'error', ename: 'GridError [GRID_ERR_ABORTED]', interrupted: true, restarted: false, kernelFrames: [] }, afterAsync: 'still here',
      // variables are gone after the restart, and counting starts again
      loop: { status: 'error', ename: 'KernelRestarted', interrupted: true, restarted: true, kernelFrames: [] }, afterLoop: 'undefined', afterLoopCount: 1,
    });
  });

  test('a cell that exits its process fails saying state was lost; the next cell runs in a fresh one', () => {
    assert.equal(report.exit_cell.reply.status, 'error');
    assert.equal(report.exit_cell.reply.ename, 'KernelDied');
    assert.match(report.exit_cell.reply.traceback!.join(' '), /exited \(code 3\)[^]*State was lost/);
    assert.deepEqual([plain(report.after_exit_cell), report.after_exit_cell.reply.execution_count], ['2', 1]);
  });

  test('restart through the manager starts a fresh process; shutdown is answered and the kernel exits 0', () => {
    assert.equal(report.restart.new_process, true);
    assert.equal(report.restart.old_cell_process_alive, false, 'the old cell process outlived the restart');
    assert.equal(report.cell_process_alive, false, 'the cell process outlived the shutdown');
    assert.equal(plain(report.restart.after), 'undefined');
    assert.deepEqual(report.shutdown_reply, { status: 'ok', restart: false });
    assert.equal(report.exit_code, 0);
  });
});

test('jupyter nbconvert --execute runs a notebook: state, await, stream, display, metrics with an HTML fallback, the local node, an error', async (t) => {
  if (!fs.existsSync(path.join(work, 'jupyter-data/kernels/grid-typescript/kernel.json'))) {
    const r = await run(process.execPath, [cli, 'kernel', 'install'], env);
    assert.equal(r.code, 0, r.err);
  }
  const node = await startNodeScript(nodeScript, ['--local', '--log-level', 'warn'], env);
  t.after(() => node.kill());
  const dir = path.join(work, 'nbconvert');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'tiny.onnx'), mlpModel(4, 4, 2));
  const code = (source: string) => ({ cell_type: 'code', metadata: {}, execution_count: null, outputs: [], source });
  const metrics = { version: 1, title: 'demo', unit: 'epoch', total: 2, state: 'succeeded', series: [{ name: 'train', points: [{ x: 1, loss: 0.9, accuracy: 0.5 }, { x: 2, loss: 0.4, accuracy: 0.8 }] }] };
  const notebook = {
    nbformat: 4, nbformat_minor: 5,
    metadata: { kernelspec: { name: 'grid-typescript', display_name: 'Grid (TypeScript)', language: 'typescript' } },
    cells: [
      code("const greeting: string = 'hello';\nconsole.log(greeting, 'from', 'TypeScript');"),
      code('const n = await Promise.resolve(21);\nn * 2'),
      code("display({ 'text/html': `<i>${greeting}</i>` });"),
      code(`display({ 'application/vnd.grid.metrics+json': ${JSON.stringify(metrics)} });`),
      code("const node = await grid.connect();\nawait grid.serve('tiny.onnx', { id: 'tiny', allowRemoteInference: true });\n[node.local, (await grid.models()).map((m) => m.id)]"),
      code("const out = await grid.infer('tiny', [[1, 2, 3, 4]]);\nout.dims"),
      code("function fail(): never {\n  throw new Error('on line 2');\n}\nfail();"),
    ],
  };
  fs.writeFileSync(path.join(dir, 'demo.ipynb'), JSON.stringify(notebook));
  const r = await run(python, ['-m', 'jupyter', 'nbconvert', '--to', 'notebook', '--execute', '--allow-errors', '--ExecutePreprocessor.timeout=120', '--output', 'demo.out.ipynb', 'demo.ipynb'], env, dir);
  assert.equal(r.code, 0, r.err);
  const ran = JSON.parse(fs.readFileSync(path.join(dir, 'demo.out.ipynb'), 'utf8')) as { cells: { execution_count: number; outputs: (Output & { output_type: string })[] }[] };
  const [stream, value, html, chart, local, infer, error] = ran.cells.map((c) => c.outputs);
  const text = (v: unknown) => (Array.isArray(v) ? v.join('') : v);
  assert.deepEqual(ran.cells.map((c) => c.execution_count), [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(stream!.map((o) => [o.output_type, o.name, text(o.text)]), [['stream', 'stdout', 'hello from TypeScript\n']]);
  assert.deepEqual(value!.map((o) => [o.output_type, text(o.data!['text/plain'])]), [['execute_result', '42']]);
  assert.equal(text(html![0]!.data!['text/html']), '<i>hello</i>');
  assert.deepEqual(chart![0]!.data!['application/vnd.grid.metrics+json'], metrics);
  assert.match(text(chart![0]!.data!['text/html']) as string, /<svg[^]*<polyline[^]*train loss[^]*loss 0\.4000, accuracy 80\.0%/);
  assert.deepEqual(local![0]!.data!['application/json'], [true, ['tiny']]);
  assert.deepEqual(infer![0]!.data!['application/json'], [1, 2]);
  assert.equal(error![0]!.output_type, 'error');
  assert.ok(error![0]!.traceback!.some((l) => l.includes('Cell [7]:2:')), error![0]!.traceback!.join('\n'));
});

test('jupyter nbconvert --execute runs the whole starter notebook against a local node with the demo datasets, FedAvg included', async (t) => {
  if (!fs.existsSync(path.join(work, 'jupyter-data/kernels/grid-typescript/kernel.json'))) {
    const r = await run(process.execPath, [cli, 'kernel', 'install'], env);
    assert.equal(r.code, 0, r.err);
  }
  const nodeEnv = { ...env, GRID_RUNTIME_DIR: path.join(work, 'starter-runtime'), GRID_DATA_DIR: path.join(work, 'starter-data') };
  const node = await startNodeScript(nodeScript, ['--local', '--demo-datasets', '--log-level', 'warn'], nodeEnv);
  t.after(() => node.kill());
  const dir = path.join(work, 'starter');
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(ROOT, 'media/samples/starter.ipynb'), path.join(dir, 'starter.ipynb'));
  const r = await run(python, ['-m', 'jupyter', 'nbconvert', '--to', 'notebook', '--execute', '--allow-errors', '--ExecutePreprocessor.timeout=600', '--output', 'starter.out.ipynb', 'starter.ipynb'], nodeEnv, dir);
  assert.equal(r.code, 0, r.err);
  const ran = JSON.parse(fs.readFileSync(path.join(dir, 'starter.out.ipynb'), 'utf8')) as { cells: { cell_type: string; source: string | string[]; outputs?: (Output & { output_type: string })[] }[] };
  const code = ran.cells.filter((c) => c.cell_type === 'code').map((c) => ({ source: [c.source].flat().join(''), outputs: c.outputs ?? [] }));
  const errors = code.filter((c) => c.outputs.some((o) => o.output_type === 'error'));
  assert.deepEqual(errors.map((c) => c.source.split('\n')[0]), [], errors.map((c) => c.outputs.find((o) => o.output_type === 'error')?.traceback?.join('\n')).join('\n\n'));
  const train = code.find((c) => c.source.includes('grid.train('))!;
  const chart = train.outputs.find((o) => o.output_type === 'display_data')!;
  const metrics = chart.data!['application/vnd.grid.metrics+json'] as { state: string; series: { name: string }[] };
  assert.equal(metrics.state, 'succeeded');
  assert.ok(metrics.series.some((s) => s.name === 'train'));
  assert.match([chart.data!['text/html']].flat().join(''), /<svg/);
  const trained = train.outputs.find((o) => o.output_type === 'execute_result')!.data!['application/json'] as { model: string; state: string };
  assert.deepEqual([trained.state, trained.model], ['succeeded', 'digits-mlp@2']);
  const image = code.find((c) => c.source.includes('display(grid.tensor('))!.outputs[0]!;
  assert.ok(image.data!['image/png'], 'the digit is shown as a PNG');
  // FedAvg over the local node's digits shards: every round with every shard (nobody dropped), its
  // chart finished, the result served as the model's next version after the trained one.
  const fedavg = code.find((c) => c.source.includes('grid.fedavg('))!;
  assert.deepEqual(fedavg.outputs.filter((o) => o.output_type === 'stream').map((o) => o.text), [], 'no warnings');
  const fedChart = fedavg.outputs.find((o) => o.output_type === 'display_data')!.data!['application/vnd.grid.metrics+json'] as { state: string; unit: string; note: string; series: { name: string; points: unknown[] }[] };
  assert.deepEqual([fedChart.state, fedChart.unit, fedChart.series.find((s) => s.name === 'train')?.points.length], ['succeeded', 'round', 3]);
  assert.match(fedChart.note, /^served as digits-mlp@3 on Local node$/);
  const lastRound = fedavg.outputs.find((o) => o.output_type === 'execute_result')!.data!['application/json'] as { round: number; dropped: unknown[]; train: { accuracy: number }; test?: { accuracy: number } };
  assert.deepEqual([lastRound.round, lastRound.dropped], [3, []]);
  assert.ok(lastRound.test !== undefined && lastRound.test.accuracy > 0.5, `FedAvg's model learnt the digits: ${JSON.stringify(lastRound)}`);
});

test('the linux-x64 VSIX carries zeromq for its platform only, and the kernel installed from it runs a cell under jupyter_client', async () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'dist/grid-kernel.js')), 'run `npm run build` first: the VSIX packs dist/');
  const dir = path.join(work, 'vsix');
  fs.mkdirSync(dir);
  const { vsix } = packageExtension({ target: 'linux-x64', out: path.join(dir, 'grid.vsix'), build: false });
  const listed = await run('unzip', ['-Z1', vsix], env);
  assert.equal(listed.code, 0, listed.err);
  const builds = listed.out.split('\n').filter((f) => /^extension\/node_modules\/zeromq\/build\/.*\.node$/.test(f));
  assert.deepEqual(builds, ['extension/node_modules/zeromq/build/linux/x64/node/glibc-127-Release/addon.node']);
  // Every other target gets its own single build in place of linux-x64's.
  for (const target of TARGETS) {
    const [os, arch] = target.split('-');
    assert.deepEqual(zeromqLines(target).map((l) => l.split('/').slice(3, 5).join('-')), [`${os}-${arch}`], target);
  }

  // Unpacked outside the repo, so nothing resolves from its node_modules: zeromq must come from the VSIX.
  assert.equal((await run('unzip', ['-q', vsix, '-d', dir], env)).code, 0);
  const prefix = path.join(dir, 'prefix');
  const installed = await run(process.execPath, [path.join(dir, 'extension/dist/grid.js'), 'kernel', 'install', '--prefix', prefix], env);
  assert.equal(installed.code, 0, installed.err);
  const script = [
    'import json, sys',
    'from jupyter_client.manager import start_new_kernel',
    `km, kc = start_new_kernel(kernel_name='grid-typescript', cwd=${JSON.stringify(dir)}, startup_timeout=120)`,
    'out = []',
    "reply = kc.execute_interactive('const n: number = 41;\\nn + 1', timeout=120, output_hook=lambda m: out.append(m['content']) if m['msg_type'] == 'execute_result' else None)",
    "print(json.dumps({'status': reply['content']['status'], 'result': [o['data']['text/plain'] for o in out]}))",
    'kc.stop_channels(); km.shutdown_kernel(now=True)',
  ].join('\n');
  const r = await run(python, ['-c', script], { ...env, JUPYTER_PATH: path.join(prefix, 'share', 'jupyter') });
  assert.equal(r.code, 0, r.err);
  assert.deepEqual(JSON.parse(r.out.trim().split('\n').at(-1)!), { status: 'ok', result: ['42'] });
});
