// Model-centric FL test helpers: a State model, hosting through our client, and a PyGrid-era worker
// that speaks bare `{type, data}` frames (no request_id) the way syft.js 0.1.4 and KotlinSyft do.

import { WebSocket } from 'ws';
import { encodeModel, makeNode, makeValueInfo, ONNX_DTYPE_CODES, tensorToProto } from '../../src/compute/onnx';
import { FlHostTraining } from '../../src/core/protocol/fl-messages';
import type { GridClient } from '../../src/core/client';
import { decodeState, encodeState, type StateTensor } from '../../src/node/fl/state';

export { decodeState, encodeState, type StateTensor };

/** A two-tensor model: w [2,2] and b [2]. */
export function smallModel(): StateTensor[] {
  return [
    { dims: [2, 2], data: Float32Array.from([1.5, -2, 0.25, 4]) },
    { dims: [2], data: Float32Array.from([0.5, -0.5]) },
  ];
}

export function hex(tensors: readonly StateTensor[]): string {
  return Buffer.from(encodeState(tensors)).toString('hex');
}

export function base64(tensors: readonly StateTensor[]): string {
  return Buffer.from(encodeState(tensors)).toString('base64');
}

export async function hostProcess(admin: GridClient, opts: { name?: string; version?: string; model?: StateTensor[]; server?: Record<string, unknown>; client?: Record<string, unknown>; plans?: Record<string, string>; averagingPlan?: string } = {}) {
  return admin.socket.request(FlHostTraining, {
    model: hex(opts.model ?? smallModel()),
    plans: opts.plans ?? {},
    ...(opts.averagingPlan !== undefined && { averaging_plan: opts.averagingPlan }),
    protocols: {},
    client_config: { name: opts.name ?? 'mnist', version: opts.version ?? '1.0', batch_size: 8, lr: 0.1, max_updates: 1, ...opts.client },
    server_config: { max_diffs: 2, num_cycles: 3, cycle_length: 3600, ...opts.server },
  });
}

/** A PyGrid-era worker socket: sends `{type, data}`, takes the next reply of that type (syft.js 0.1.4's rule). */
export class PyGridSocket {
  private readonly ws: WebSocket;
  private readonly waiting: { type: string; requestId?: string; resolve(msg: Record<string, unknown>): void }[] = [];

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (raw) => {
      const msg = JSON.parse(String(raw)) as Record<string, unknown>;
      // A frame with a request id answers the waiter that sent it; the others, the first waiter of its type.
      const i = typeof msg.request_id === 'string'
        ? this.waiting.findIndex((w) => w.requestId === msg.request_id)
        : this.waiting.findIndex((w) => w.type === msg.type && w.requestId === undefined);
      if (i >= 0) this.waiting.splice(i, 1)[0]!.resolve(msg);
    });
  }

  /** `localAddress`: dial from another loopback address (127.0.0.2), as a second machine would. */
  static async open(url: string, localAddress?: string): Promise<PyGridSocket> {
    const ws = new WebSocket(url, localAddress !== undefined ? { localAddress } : {});
    await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); });
    return new PyGridSocket(ws);
  }

  /** The whole reply frame ({type, data, error?}). */
  send(type: string, data: unknown): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.waiting.push({ type, resolve });
      this.ws.send(JSON.stringify({ type, data }));
    });
  }

  /**
   * With a `request_id`, as KotlinSyft sends: its reply is sent as soon as it is ready, not behind this
   * connection's earlier id-less requests (which the node answers in arrival order).
   */
  sendWithId(type: string, data: unknown, requestId: string): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.waiting.push({ type, requestId, resolve });
      this.ws.send(JSON.stringify({ type, data, request_id: requestId }));
    });
  }

  /** The reply's `data`. */
  async call(type: string, data: unknown): Promise<Record<string, any>> {
    return (await this.send(type, data)).data as Record<string, any>;
  }

  close(): void {
    this.ws.close();
  }
}

/** authenticate → cycle-request on one socket; the accepted (or rejected) reply. */
export async function joinCycle(ws: PyGridSocket, name = 'mnist', version = '1.0', speeds: Record<string, unknown> = { ping: 0, download: 0, upload: 0 }) {
  const auth = await ws.call('model-centric/authenticate', { model_name: name, model_version: version });
  const cycle = await ws.call('model-centric/cycle-request', { worker_id: auth.worker_id, model: name, version, ...speeds });
  return { workerId: auth.worker_id as string, cycle };
}

/** The diff of a worker that moved each parameter by `-delta` (diff = old − new = delta). */
export function diffOf(delta: number[][]): string {
  const shapes = smallModel().map((t) => t.dims);
  return base64(delta.map((d, i) => ({ dims: shapes[i]!, data: Float32Array.from(d) })));
}

export function httpBase(wsUrl: string): string {
  return wsUrl.replace(/^ws/, 'http');
}

/**
 * An ONNX averaging plan of the contract (src/node/fl/averaging-plan.ts) with a server learning rate:
 * new = old − lr · mean(diff). `params`: the model's parameter names and shapes.
 */
export function serverLrPlan(params: { name: string; dims: number[] }[], lr: number, opts: { outputs?: { name: string; dims: number[] }[] } = {}): Uint8Array {
  const f32 = ONNX_DTYPE_CODES.float32;
  return encodeModel({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'server-lr',
      node: params.flatMap((p, i) => [
        makeNode('Mul', [`diff/${p.name}`, 'lr'], [`step_${i}`]),
        makeNode('Sub', [`old/${p.name}`, `step_${i}`], [opts.outputs?.[i]?.name ?? p.name]),
      ]),
      initializer: [tensorToProto('lr', { dtype: 'float32', dims: [], data: Float32Array.of(lr) })],
      input: params.flatMap((p) => [makeValueInfo(`old/${p.name}`, f32, p.dims), makeValueInfo(`diff/${p.name}`, f32, p.dims)]),
      output: params.map((p, i) => makeValueInfo(opts.outputs?.[i]?.name ?? p.name, f32, opts.outputs?.[i]?.dims ?? p.dims)),
    },
  });
}
