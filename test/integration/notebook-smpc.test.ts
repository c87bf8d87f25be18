// Encrypted serving from a notebook cell (src/kernel/smpc-bridge.ts) under a real kernel
// process, against three real nodes on 127.0.0.1 port 0: `grid.serveEncrypted` splits the digits MLP
// between two share holders with a third node as crypto provider; `grid.infer` on it is the same call as on
// a plain model and answers as the plain model does; the same node named twice and an unconnected
// share holder are coded errors that say what to do in a notebook. The Jupyter kernel's bridge (its own
// connections, no VS Code) serves, runs and deletes an encrypted model with the same calls.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { GridClient } from '../../src/core/client';
import { gridError } from '../../src/core/errors';
import { SmpcModels } from '../../src/core/protocol/smpc-messages';
import { NotebookGridBridge, type BridgeNode } from '../../src/extension/notebook/bridge';
import { StandaloneGridBridge } from '../../src/kernel/jupyter/grid-bridge';
import type { KernelHost } from '../../src/kernel';
import { ADMIN_PASSWORD, startTestNode, type TestNode } from '../helpers/node-fixtures';
import { notebookDir, run, startKernel, value } from './kernel-harness';

const ROOT = join(import.meta.dirname, '..', '..');

describe('grid.serveEncrypted and grid.infer on an encrypted model from a notebook', () => {
  let holder0: TestNode, holder1: TestNode, provider: TestNode;
  let kernel: KernelHost;
  let nb: Awaited<ReturnType<typeof notebookDir>>;
  const clients: GridClient[] = [];
  const nodes: BridgeNode[] = [];

  before(async () => {
    nb = await notebookDir();
    [holder0, holder1, provider] = await Promise.all([startTestNode({ name: 'holder-0' }), startTestNode({ name: 'holder-1' }), startTestNode({ name: 'provider' })]);
    await copyFile(join(ROOT, 'media', 'samples', 'digits', 'digits-mlp.onnx'), join(nb.dir, 'digits-mlp.onnx'));
    const names = new Map([[holder0.node.url, 'holder A'], [holder1.node.url, 'holder B'], [provider.node.url, 'provider C']]);
    // The extension's connections, reduced to what the bridge reads: one shared client per node.
    const bridge = new NotebookGridBridge({
      cwd: nb.dir,
      nodes: {
        list: () => nodes,
        connect: async (target, credentials) => {
          const name = target === undefined ? undefined : names.get(target);
          if (name === undefined) throw gridError('NOT_FOUND', `no node at ${String(target)}`);
          const client = await GridClient.connect(target!, credentials ? { credentials } : {});
          clients.push(client);
          const n: BridgeNode = { name, url: target!, local: false, state: 'connected', isOpen: true, user: credentials?.username, client, datasets: [], models: [] };
          nodes.push(n);
          return n;
        },
        disconnect: () => undefined,
      },
    });
    kernel = await startKernel({ bridge, cwd: nb.dir, interruptTimeoutMs: 60_000 });
  });

  after(async () => {
    await kernel?.dispose();
    for (const c of clients) c.dispose();
    await Promise.all([holder0?.close(), holder1?.close(), provider?.close()]);
    await nb?.remove();
  });

  const login = `{ username: 'admin', password: ${JSON.stringify(ADMIN_PASSWORD)} }`;
  const x = 'const x = [Array.from({ length: 64 }, (_, i) => (i % 17) / 16), Array.from({ length: 64 }, (_, i) => ((i * 7) % 16) / 16)];';

  test('serves the model encrypted; infer on it reads the same as on the plain model', async () => {
    // Holder A and the provider first: an encrypted model whose other share holder is not connected says how to connect it.
    await value(kernel, `await grid.connect(${JSON.stringify(holder0.node.url)}, ${login});\nawait grid.connect(${JSON.stringify(provider.node.url)}, ${login});`);
    const twice = await run(kernel, `await grid.serveEncrypted('digits-mlp.onnx', { holders: ['holder A', 'holder A'], provider: 'provider C' })`);
    assert.equal(twice.result.error?.code, 'GRID_ERR_INVALID_INPUT');
    assert.match(twice.result.error!.message, /names holder A twice: the two share holders and the crypto provider must be three different nodes/);
    const shareTypes = async () => (await (await fetch(`${holder0.node.url.replace(/^ws/, 'http')}/metrics`)).text()).includes('smpc-host-share');
    assert.equal(await shareTypes(), false, 'a refused call sent a share');

    await value(kernel, `await grid.connect(${JSON.stringify(holder1.node.url)}, ${login});`);
    const served = await value(kernel, "const s = await grid.serveEncrypted('digits-mlp.onnx', { holders: ['holder A', 'holder B'], provider: 'provider C' });\n[s.model_id, s.params, s.holders.map((h) => h.address).join(' '), s.provider.address].join(' | ')");
    assert.equal(served, `digits-mlp | ${64 * 32 + 32 + 32 * 10 + 10} | ${holder0.node.url} ${holder1.node.url} | ${provider.node.url}`);
    // What the tree lists: both holders know the model, with the other and the provider; the provider holds nothing.
    const [l0, l1, lp] = await Promise.all([holder0, holder1, provider].map(async (n) => (await (await n.admin()).socket.request(SmpcModels, {})).models));
    assert.deepEqual(l0!.map((m) => [m.model_id, m.party, m.peer.address, m.provider.address]), [['digits-mlp', 0, holder1.node.url, provider.node.url]]);
    assert.deepEqual(l1!.map((m) => [m.model_id, m.party, m.peer.address]), [['digits-mlp', 1, holder0.node.url]]);
    assert.deepEqual(lp, []);

    // The plain model on the provider node, for parity: the cell's infer call is the same for both.
    await value(kernel, "await grid.serve('digits-mlp.onnx', { id: 'digits-plain', node: 'provider C', allowRemoteInference: true });");
    const out = await value(kernel, `${x}
const enc = await grid.infer('digits-mlp', x, { node: 'holder B' });
const plain = await grid.infer('digits-plain', x, { node: 'provider C' });
const err = Math.max(...Array.from(enc.data, (v, i) => Math.abs(v - plain.data[i])));
JSON.stringify({ dtype: enc.dtype, dims: enc.dims, close: err < 1e-2, err })`);
    const r = JSON.parse(out!) as { dtype: string; dims: number[]; close: boolean; err: number };
    assert.deepEqual([r.dtype, r.dims, r.close], ['float32', [2, 10], true], `max abs error ${r.err}`);
  });

  test('infer on an encrypted model whose other share holder is not connected says to connect it', async () => {
    const i = nodes.findIndex((n) => n.name === 'holder B');
    const [b] = nodes.splice(i, 1);
    try {
      const { result } = await run(kernel, `${x}\nawait grid.infer('digits-mlp', x, { node: 'holder A' })`);
      assert.equal(result.error?.code, 'GRID_ERR_NOT_CONNECTED');
      assert.match(result.error!.message, new RegExp(`connect to the other one first, await grid\\.connect\\("${holder1.node.url}"\\)`));
    } finally {
      nodes.splice(i, 0, b!);
    }
  });

  test('a model neither plain nor encrypted on the node is still NOT_FOUND', async () => {
    const { result } = await run(kernel, "await grid.infer('no-such-model', [[1]], { node: 'holder A' })");
    assert.equal(result.error?.code, 'GRID_ERR_NOT_FOUND');
    assert.match(result.error!.message, /no-such-model/);
  });
});

describe('grid.serveEncrypted, grid.infer and grid.deleteModel on an encrypted model from the Jupyter kernel', () => {
  let holder0: TestNode, holder1: TestNode, provider: TestNode;
  let kernel: KernelHost;
  let nb: Awaited<ReturnType<typeof notebookDir>>;

  before(async () => {
    nb = await notebookDir();
    [holder0, holder1, provider] = await Promise.all([startTestNode({ name: 'holder-0' }), startTestNode({ name: 'holder-1' }), startTestNode({ name: 'provider' })]);
    await copyFile(join(ROOT, 'media', 'samples', 'digits', 'digits-mlp.onnx'), join(nb.dir, 'digits-mlp.onnx'));
    // The bridge the Jupyter kernel runs (src/kernel/jupyter/main.ts): it connects to the nodes itself.
    kernel = await startKernel({ bridge: new StandaloneGridBridge({ cwd: nb.dir, env: {} }), cwd: nb.dir, interruptTimeoutMs: 60_000 });
  });

  after(async () => {
    await kernel?.dispose();
    await Promise.all([holder0?.close(), holder1?.close(), provider?.close()]);
    await nb?.remove();
  });

  test('serves the model encrypted, infers like the plain model, and deletes it from both share holders', async () => {
    const login = `{ username: 'admin', password: ${JSON.stringify(ADMIN_PASSWORD)} }`;
    const [u0, u1, up] = [holder0, holder1, provider].map((n) => JSON.stringify(n.node.url));
    await value(kernel, `await grid.connect(${u0}, ${login});\nawait grid.connect(${u1}, ${login});\nawait grid.connect(${up}, ${login});`);
    const served = await value(kernel, `const s = await grid.serveEncrypted('digits-mlp.onnx', { holders: [${u0}, ${u1}], provider: ${up} });\n[s.model_id, s.params].join(' | ')`);
    assert.equal(served, `digits-mlp | ${64 * 32 + 32 + 32 * 10 + 10}`);
    await value(kernel, `await grid.serve('digits-mlp.onnx', { id: 'digits-plain', node: ${up}, allowRemoteInference: true });`);
    const out = await value(kernel, `const x = [Array.from({ length: 64 }, (_, i) => (i % 17) / 16)];
const enc = await grid.infer('digits-mlp', x, { node: ${u1} });
const plain = await grid.infer('digits-plain', x, { node: ${up} });
JSON.stringify({ dims: enc.dims, err: Math.max(...Array.from(enc.data, (v, i) => Math.abs(v - plain.data[i]))) })`);
    const r = JSON.parse(out!) as { dims: number[]; err: number };
    assert.deepEqual(r.dims, [1, 10]);
    assert.ok(r.err < 1e-2, `max abs error ${r.err}`);
    const deleted = await value(kernel, `JSON.stringify(await grid.deleteModel('digits-mlp', { node: ${u0} }))`);
    assert.deepEqual(JSON.parse(deleted!), { model_id: 'digits-mlp', deleted: true, encrypted: true });
    for (const n of [holder0, holder1]) {
      const c = await n.admin();
      assert.deepEqual((await c.socket.request(SmpcModels, {})).models, [], 'both share holders deleted their share');
    }
  });
});
