// Shared by the kernel integration tests: a real kernel process (the bundled worker),
// a temp notebook folder, and a GridBridge that forwards grid calls over real HTTP to a server the
// test controls — so cancels are seen where a node would see them, on the other end of a socket.

import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { build } from 'esbuild';
import { GridError, isErrorCode } from '../../src/core/errors';
import { tensorFromValues, type DType } from '../../src/core/protocol/tensor';
import { KernelHost, type CellOutput, type ExecuteOptions, type ExecutionResult, type GridBridge, type KernelOptions } from '../../src/kernel';
import '../helpers/check-replies';

const ROOT = join(__dirname, '../..');
let bundle: Promise<string> | undefined;

/**
 * The worker bundled as scripts/build.mjs bundles it (dist/kernel-worker.js), so the tests run what
 * ships; it lives under the repo's .test-work/ so its external `esbuild` resolves from node_modules.
 */
export function workerBundle(): Promise<string> {
  bundle ??= (async () => {
    await mkdir(join(ROOT, '.test-work'), { recursive: true });
    const dir = await mkdtemp(join(ROOT, '.test-work', 'kernel-'));
    process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
    const outfile = join(dir, 'kernel-worker.js');
    await build({
      entryPoints: [join(ROOT, 'src/kernel/worker.ts')], outfile, bundle: true, platform: 'node', target: 'node20', format: 'cjs',
      sourcemap: true, external: ['vscode', 'onnxruntime-node', 'node-sqlite3-wasm', 'esbuild'], logLevel: 'warning',
    });
    return outfile;
  })();
  return bundle;
}

export async function notebookDir(): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'grid-kernel-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export async function startKernel(options: KernelOptions = {}): Promise<KernelHost> {
  return new KernelHost({ workerPath: await workerBundle(), ...options });
}

export interface Ran {
  result: ExecutionResult;
  outputs: CellOutput[];
}

export async function run(kernel: KernelHost, code: string, options: ExecuteOptions = {}): Promise<Ran> {
  const outputs: CellOutput[] = [];
  const result = await kernel.execute(code, {
    ...options,
    onOutput: (o) => { outputs.push(o); options.onOutput?.(o); },
  });
  return { result, outputs };
}

export const stdoutOf = (outputs: CellOutput[]) => outputs.map((o) => (o.kind === 'stream' && o.stream === 'stdout' ? o.text : '')).join('');
export const stderrOf = (outputs: CellOutput[]) => outputs.map((o) => (o.kind === 'stream' && o.stream === 'stderr' ? o.text : '')).join('');

/** The text/plain of the cell's displays (its Out[n] is the last). */
export function plainOf(outputs: CellOutput[]): string[] {
  return outputs.flatMap((o) => (o.kind === 'display' && typeof o.data['text/plain'] === 'string' ? [o.data['text/plain']] : []));
}

/** Runs a cell that must succeed and returns the text/plain of its value. */
export async function value(kernel: KernelHost, code: string): Promise<string | undefined> {
  const { result, outputs } = await run(kernel, code);
  if (result.status !== 'ok') throw new Error(`cell failed: ${code}\n${result.error?.stack ?? result.status}`);
  return plainOf(outputs).at(-1);
}

/** How long a kernel test waits for any one thing; generous (the machine is shared), but finite. */
export const WAIT_MS = 60_000;

/** `p`, or a failure naming `what` once `ms` have passed: a regression fails the test instead of hanging it. */
export function within<T>(p: Promise<T>, what: string, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still waiting after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

export interface HeldRequest {
  method: string;
  args: unknown[];
  /** Resolves when the client gives up on the request (abort): what a node sees on a cancel. */
  closed: Promise<void>;
  reply(body: unknown, status?: number): void;
}

/**
 * A grid stand-in on 127.0.0.1 port 0: each request is handed to the test (`next()`), which answers
 * it when it chooses. The bridge below turns {dtype, dims, data} replies into real tensors.
 */
export async function gridServer() {
  const waiting: ((r: HeldRequest) => void)[] = [];
  const arrived: HeldRequest[] = [];
  const sockets = new Set<import('node:net').Socket>();
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => { body += c; });
    req.on('end', () => {
      const closed = new Promise<void>((resolve) => res.on('close', () => { if (!res.writableFinished) resolve(); }));
      const held: HeldRequest = {
        method: (req.url ?? '/').slice(1),
        args: JSON.parse(body) as unknown[],
        closed,
        reply(payload, status = 200) {
          res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(payload));
        },
      };
      const taker = waiting.shift();
      if (taker) taker(held); else arrived.push(held);
    });
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const bridge: GridBridge = {
    async call(method, args, context) {
      const res = await fetch(`http://127.0.0.1:${port}/${method}`, { method: 'POST', body: JSON.stringify(args), signal: context.signal });
      const body = (await res.json()) as { value?: unknown; tensor?: { dtype: DType; dims: number[]; data: number[] }; progress?: string[]; error?: { code: string; message: string }; unsendable?: true };
      if (body.error) throw new GridError(isErrorCode(body.error.code) ? body.error.code : 'GRID_ERR_INTERNAL', body.error.message);
      // A result the host cannot send on to the kernel process (a function does not serialize).
      if (body.unsendable) return { value: body.value, callback: () => body.value };
      for (const line of body.progress ?? []) context.output({ kind: 'stream', stream: 'stdout', text: `${line}\n` });
      if (body.tensor) return tensorFromValues(body.tensor.dtype, body.tensor.dims, body.tensor.data);
      return body.value;
    },
  };
  return {
    port,
    bridge,
    /** The next grid call that reaches the server; fails after WAIT_MS without one. */
    next(): Promise<HeldRequest> {
      const first = arrived.shift();
      if (first) return Promise.resolve(first);
      let taker!: (r: HeldRequest) => void;
      const arrives = new Promise<HeldRequest>((resolve) => { taker = resolve; waiting.push(taker); });
      return within(arrives, 'no grid call reached the server').catch((err: unknown) => {
        const i = waiting.indexOf(taker);
        if (i >= 0) waiting.splice(i, 1);
        throw err;
      });
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
