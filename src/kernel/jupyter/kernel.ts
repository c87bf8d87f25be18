// A Jupyter kernel over the notebook runtime: the five ZeroMQ sockets of the connection file, each
// request answered by driving a KernelHost exactly as the VS Code controller does. The host process
// never runs cell code (the KernelHost's worker does), so control and heartbeat always answer, even
// while a cell spins in `while (true) {}`; hence interrupt_mode "message" (see kernelspec.ts).

import { randomUUID } from 'node:crypto';
import * as zmq from 'zeromq';
import { CellSyntaxError, compileCell } from '../compile';
import type { ExecutionResult, KernelHost, KernelLogger } from '../host';
import { complete as staticComplete } from '../introspect';
import type { CellError, CellOutput } from '../protocol';
import { toErrorContent, toJupyterData } from './outputs';
import {
  decode, encode, endpoint, makeHeader, MessageSigner, PROTOCOL_VERSION,
  type ConnectionInfo, type JupyterMessage,
} from './wire';

/** Largest ZeroMQ message the kernel's sockets take in. */
const MAX_FRAME_BYTES = 64 * 1024 * 1024;

export const KERNEL_VERSION = '0.1.0';

export const LANGUAGE_INFO = {
  name: 'typescript',
  version: 'ES2022',
  mimetype: 'text/typescript',
  file_extension: '.ts',
  codemirror_mode: { name: 'javascript', typescript: true },
  pygments_lexer: 'typescript',
};

export interface JupyterKernelOptions {
  connection: ConnectionInfo;
  /** The runtime the cells run in; the kernel disposes it on shutdown. */
  host: KernelHost;
  logger?: KernelLogger;
}

/** Sends on one socket one message at a time: a zeromq v6 socket refuses overlapping sends. */
class Outbox {
  private tail: Promise<void> = Promise.resolve();
  constructor(private readonly socket: zmq.Writable, private readonly logger: KernelLogger) {}

  send(frames: Buffer[]): Promise<void> {
    this.tail = this.tail.then(() => this.socket.send(frames)).catch((err: unknown) => this.logger.warn('jupyter send failed', { error: String(err) }));
    return this.tail;
  }
}

type Channel = 'shell' | 'control';
interface Request { message: JupyterMessage; channel: Channel }

/** Parents kept for output that arrives after its cell ended. */
const PARENTS_KEPT = 64;
/** Signatures remembered to refuse a replayed message (ipykernel keeps as many). */
const SIGNATURES_KEPT = 65_536;

export class JupyterKernel {
  private readonly connection: ConnectionInfo;
  private readonly host: KernelHost;
  private readonly logger: KernelLogger;
  private readonly signer: MessageSigner;
  private readonly session = randomUUID();
  private readonly shell = new zmq.Router();
  private readonly control = new zmq.Router();
  private readonly stdin = new zmq.Router();
  private readonly iopub = new zmq.Publisher();
  private readonly heartbeat = new zmq.Reply();
  private readonly out: Record<Channel | 'iopub', Outbox>;
  /** Shell requests run one after another, as in ipykernel; control requests jump the queue. */
  private readonly shellQueue: Request[] = [];
  private draining = false;
  /** executionCount → the execute_request that ran it, for late output. */
  private readonly parents = new Map<number, JupyterMessage>();
  private readonly subscriptions: { dispose(): void }[] = [];
  private readonly signatures = new Set<string>();
  private readonly unsupported = new Set<string>();
  private closing: Promise<void> | undefined;
  private resolveClosed!: () => void;
  /** Resolves once the kernel has shut down (a shutdown_request, or close()). */
  readonly closed = new Promise<void>((r) => { this.resolveClosed = r; });
  /** Messages dropped for a bad signature, a replay or a malformed frame, counted in the log. */
  private rejected = 0;

  private constructor(options: JupyterKernelOptions) {
    this.connection = options.connection;
    this.host = options.host;
    this.logger = options.logger ?? { debug() {}, warn() {}, error() {} };
    this.signer = new MessageSigner(this.connection.signature_scheme, this.connection.key);
    this.out = { shell: new Outbox(this.shell, this.logger), control: new Outbox(this.control, this.logger), iopub: new Outbox(this.iopub, this.logger) };
  }

  /** Binds the sockets of the connection file and starts answering. */
  static async start(options: JupyterKernelOptions): Promise<JupyterKernel> {
    const kernel = new JupyterKernel(options);
    await kernel.bind();
    return kernel;
  }

  private async bind(): Promise<void> {
    const c = this.connection;
    // Replies still queued when the kernel closes (the shutdown_reply) get a second to leave.
    for (const s of [this.shell, this.control, this.iopub]) s.linger = 1000;
    for (const s of [this.stdin, this.heartbeat]) s.linger = 0;
    // Frames are read before their signature is checked: bound them, or any local user could make the
    // kernel hold gigabytes (a cell's code and a message's JSON are far below this).
    for (const s of [this.shell, this.control, this.stdin, this.heartbeat]) s.maxMessageSize = MAX_FRAME_BYTES;
    await Promise.all([
      this.shell.bind(endpoint(c, c.shell_port)),
      this.control.bind(endpoint(c, c.control_port)),
      this.stdin.bind(endpoint(c, c.stdin_port)),
      this.iopub.bind(endpoint(c, c.iopub_port)),
      this.heartbeat.bind(endpoint(c, c.hb_port)),
    ]);
    void this.receive(this.shell, 'shell');
    void this.receive(this.control, 'control');
    void this.echoHeartbeat();
    this.subscriptions.push(
      this.host.onDidEmitLateOutput(({ executionCount, output }) => {
        const parent = this.parents.get(executionCount);
        if (parent) this.publishOutput(output, parent, executionCount);
      }),
      this.host.onDidLoseState(() => this.parents.clear()),
    );
    this.publish('status', { execution_state: 'starting' }, undefined);
    // The worker starts now, so the first cell does not wait for Node and esbuild to load.
    this.host.start().catch((err: unknown) => this.logger.error('kernel runtime failed to start', { error: String(err) }));
  }

  /** Closes the sockets and the runtime. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      for (const s of this.subscriptions.splice(0)) s.dispose();
      await this.host.dispose();
      for (const s of [this.shell, this.control, this.stdin, this.iopub, this.heartbeat]) s.close();
      this.resolveClosed();
    })();
    return this.closing;
  }

  // ---- receiving ----

  private async receive(socket: zmq.Router, channel: Channel): Promise<void> {
    try {
      for await (const frames of socket) {
        const decoded = decode(frames, this.signer);
        const reason = decoded.ok ? this.replayed(decoded.signature) : decoded.reason;
        if (!decoded.ok || reason) {
          this.rejected++;
          this.logger.warn(`jupyter ${channel}: message dropped (${reason}; ${this.rejected} so far)`);
          continue;
        }
        const request = { message: decoded.message, channel };
        if (channel === 'control') void this.handle(request);
        else {
          this.shellQueue.push(request);
          if (!this.draining) void this.drainShell();
        }
      }
    } catch (err) {
      if (!this.closing) this.logger.error(`jupyter ${channel} socket failed`, { error: String(err) });
    }
  }

  /** A signed message seen before is a replay (someone resending captured frames), not a request. */
  private replayed(signature: string): string | undefined {
    if (signature === '') return undefined; // unsigned (empty key): nothing to tell copies apart by
    if (this.signatures.has(signature)) return 'a replay of an earlier message';
    this.signatures.add(signature);
    if (this.signatures.size > SIGNATURES_KEPT) this.signatures.delete(this.signatures.values().next().value!);
    return undefined;
  }

  private async echoHeartbeat(): Promise<void> {
    try {
      for await (const frames of this.heartbeat) await this.heartbeat.send(frames);
    } catch (err) {
      if (!this.closing) this.logger.error('jupyter heartbeat failed', { error: String(err) });
    }
  }

  private async drainShell(): Promise<void> {
    this.draining = true;
    try {
      for (let next = this.shellQueue.shift(); next; next = this.shellQueue.shift()) await this.handle(next);
    } finally {
      this.draining = false;
    }
  }

  private async handle(request: Request): Promise<void> {
    const { message } = request;
    const type = message.header.msg_type;
    if (this.closing && type !== 'shutdown_request') return;
    this.publish('status', { execution_state: 'busy' }, message);
    try {
      switch (type) {
        case 'kernel_info_request': return this.reply(request, 'kernel_info_reply', this.kernelInfo());
        case 'execute_request': return await this.execute(request);
        case 'is_complete_request': return this.reply(request, 'is_complete_reply', await isComplete(str(message.content.code)));
        case 'complete_request': return this.reply(request, 'complete_reply', await this.complete(message));
        case 'inspect_request': return this.reply(request, 'inspect_reply', await this.inspect(message));
        case 'history_request': return this.reply(request, 'history_reply', { status: 'ok', history: [] });
        case 'comm_info_request': return this.reply(request, 'comm_info_reply', { status: 'ok', comms: {} });
        case 'comm_open':
          // No comm targets here: closing it at once tells the front end so (ipykernel does the same).
          return this.publish('comm_close', { comm_id: message.content.comm_id, data: {} }, message);
        case 'comm_msg':
        case 'comm_close':
          return;
        case 'interrupt_request':
          void this.host.interrupt();
          return this.reply(request, 'interrupt_reply', { status: 'ok' });
        case 'shutdown_request': {
          const content = { status: 'ok', restart: message.content.restart === true };
          await this.reply(request, 'shutdown_reply', content);
          this.publish('shutdown_reply', content, message);
          await this.close();
          return;
        }
        default:
          // Once per type: a front-end extension may poll with one (usage_request every few seconds).
          if (!this.unsupported.has(type)) this.logger.warn(`jupyter ${request.channel}: unsupported message type ${type}, ignored`);
          this.unsupported.add(type);
      }
    } catch (err) {
      this.logger.error(`jupyter ${type} failed`, { error: String(err) });
      if (type.endsWith('_request')) await this.reply(request, type.replace(/_request$/, '_reply'), { status: 'error', ename: 'KernelError', evalue: String(err), traceback: [] });
    } finally {
      if (!this.closing) this.publish('status', { execution_state: 'idle' }, message);
    }
  }

  // ---- requests ----

  private kernelInfo(): Record<string, unknown> {
    return {
      status: 'ok',
      protocol_version: PROTOCOL_VERSION,
      implementation: 'grid-typescript',
      implementation_version: KERNEL_VERSION,
      language_info: LANGUAGE_INFO,
      banner: `Grid (TypeScript) ${KERNEL_VERSION} on Node ${process.versions.node}: TypeScript cells, top-level await, the grid API`,
      help_links: [],
      debugger: false,
    };
  }

  private async execute(request: Request): Promise<void> {
    const { message } = request;
    const code = str(message.content.code);
    // Jupyter: a silent execution publishes nothing and, like one with store_history false, takes no count.
    const silent = message.content.silent === true;
    const uncounted = silent || message.content.store_history === false;
    const stopOnError = message.content.stop_on_error !== false;
    let count = this.host.executionCount;
    const result: ExecutionResult = await this.host.execute(code, {
      language: 'typescript', uncounted,
      onStart: ({ executionCount }) => {
        count = executionCount;
        if (!uncounted) {
          this.parents.set(count, message);
          if (this.parents.size > PARENTS_KEPT) this.parents.delete(this.parents.keys().next().value!);
        }
        if (!silent) this.publish('execute_input', { code, execution_count: count }, message);
      },
      onOutput: (output) => { if (!silent) this.publishOutput(output, message, count); },
    });
    if (result.status === 'ok') {
      const userExpressions = await this.userExpressions(message.content.user_expressions);
      await this.reply(request, 'execute_reply', { status: 'ok', execution_count: count, user_expressions: userExpressions, payload: [] });
      return;
    }
    if (result.status === 'cancelled') {
      await this.reply(request, 'execute_reply', { status: 'aborted', execution_count: count });
      return;
    }
    const error = result.error ?? { name: 'Interrupted', message: 'the cell was interrupted', stack: 'Interrupted: the cell was interrupted' };
    // Taken before the reply goes out: a request the client sends after reading the reply is not aborted.
    const queued = stopOnError ? this.takeQueuedExecutions() : [];
    await this.reply(request, 'execute_reply', {
      // As IPython's: user_expressions are evaluated only after a cell that succeeded.
      status: 'error', execution_count: count, ...toErrorContent(error), user_expressions: {},
      // Says whether the kernel survived an interrupt: false, it did (variables kept); true, its
      // process was restarted because the cell would not stop (see interruptTimeoutMs).
      ...(result.status === 'interrupted' && { grid_interrupted: true, grid_kernel_restarted: result.stateLost }),
    });
    for (const r of queued) {
      this.publish('status', { execution_state: 'busy' }, r.message);
      await this.reply(r, 'execute_reply', { status: 'aborted', execution_count: this.host.executionCount });
      this.publish('status', { execution_state: 'idle' }, r.message);
    }
  }

  /**
   * Jupyter's user_expressions: each `{ name: code }` evaluated in the cell's namespace after the cell ran,
   * answered as `{ name: { status: "ok", data, metadata } }` (the value's MIME bundle, as an execute_result
   * would show it) or `{ name: { status: "error", ename, evalue, traceback } }`. Silently: no output, no count.
   */
  private async userExpressions(expressions: unknown): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    if (typeof expressions !== 'object' || expressions === null) return out;
    for (const [name, expression] of Object.entries(expressions as Record<string, unknown>)) {
      let data: Record<string, unknown> = { 'text/plain': 'undefined' };
      let failure: CellError | undefined;
      // In parentheses, so `{ a: 1 }` is an object, not a block.
      const r = await this.host.execute(`(${str(expression)}\n)`, {
        language: 'typescript', uncounted: true, cellName: `user_expressions[${JSON.stringify(name)}]`,
        onOutput: (o) => {
          if (o.kind === 'display' && o.result) data = toJupyterData(o.data);
          else if (o.kind === 'error') failure = o.error;
        },
      });
      failure ??= r.status === 'ok' ? undefined : r.error ?? { name: 'Interrupted', message: 'the expression was interrupted', stack: 'Interrupted: the expression was interrupted' };
      out[name] = failure ? { status: 'error', ...toErrorContent(failure) } : { status: 'ok', data, metadata: {} };
    }
    return out;
  }

  /** After a failed cell, the cells queued behind it do not run (Jupyter's stop_on_error): they are answered "aborted". */
  private takeQueuedExecutions(): Request[] {
    const taken = this.shellQueue.filter((r) => r.message.header.msg_type === 'execute_request');
    for (const r of taken) this.shellQueue.splice(this.shellQueue.indexOf(r), 1);
    return taken;
  }

  private async complete(message: JupyterMessage): Promise<Record<string, unknown>> {
    const code = str(message.content.code);
    const cursor = toUtf16(code, num(message.content.cursor_pos, codePoints(code)));
    // From the live kernel; while a cell blocks it, from the keywords and the names in this cell.
    const found = await this.host.introspect('complete', code, cursor) ?? staticComplete(code, cursor, {});
    return {
      status: 'ok', matches: found.matches, metadata: {},
      cursor_start: codePoints(code.slice(0, found.start)), cursor_end: codePoints(code.slice(0, found.end)),
    };
  }

  private async inspect(message: JupyterMessage): Promise<Record<string, unknown>> {
    const code = str(message.content.code);
    const cursor = toUtf16(code, num(message.content.cursor_pos, codePoints(code)));
    const found = await this.host.introspect('inspect', code, cursor);
    return found?.data ? { status: 'ok', found: true, data: toJupyterData(found.data), metadata: {} } : { status: 'ok', found: false, data: {}, metadata: {} };
  }

  // ---- sending ----

  private reply(request: Request, msgType: string, content: Record<string, unknown>): Promise<void> {
    const { message } = request;
    return this.out[request.channel].send(encode({
      identities: message.identities, header: makeHeader(msgType, this.session), parent_header: message.header, metadata: {}, content,
    }, this.signer));
  }

  private publish(msgType: string, content: Record<string, unknown>, parent: JupyterMessage | undefined): void {
    void this.out.iopub.send(encode({
      identities: [Buffer.from(`kernel.${this.session}.${msgType}`)],
      header: makeHeader(msgType, this.session), parent_header: parent?.header ?? {}, metadata: {}, content,
    }, this.signer));
  }

  private publishOutput(output: CellOutput, parent: JupyterMessage, executionCount: number): void {
    switch (output.kind) {
      case 'stream':
        return this.publish('stream', { name: output.stream, text: output.text }, parent);
      case 'error':
        return this.publish('error', { ...toErrorContent(output.error) }, parent);
      case 'display': {
        const data = toJupyterData(output.data);
        if (output.result) return this.publish('execute_result', { execution_count: executionCount, data, metadata: {} }, parent);
        const transient = output.displayId !== undefined ? { display_id: output.displayId } : {};
        return this.publish(output.update && output.displayId !== undefined ? 'update_display_data' : 'display_data', { data, metadata: {}, transient }, parent);
      }
    }
  }
}

/** Jupyter's is_complete: "incomplete" while the cell could still be finished by more lines. */
export async function isComplete(code: string): Promise<Record<string, unknown>> {
  try {
    await compileCell(code, 'typescript', 'is_complete');
    return { status: 'complete' };
  } catch (err) {
    if (err instanceof CellSyntaxError && /end of file|Unterminated template/i.test(err.message)) {
      const last = code.split('\n').pop() ?? '';
      const indent = /^\s*/.exec(last)![0] + (/[{([]\s*$/.test(last) ? '  ' : '');
      return { status: 'incomplete', indent };
    }
    return { status: 'invalid' };
  }
}

const str = (v: unknown): string => (typeof v === 'string' ? v : '');
const num = (v: unknown, fallback: number): number => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? v : fallback);

/** Jupyter counts cursor positions in code points (protocol 5.2); JavaScript strings in UTF-16 units. */
function codePoints(text: string): number {
  let n = 0;
  for (const _ of text) n++;
  return n;
}

function toUtf16(text: string, points: number): number {
  let offset = 0;
  let n = 0;
  for (const ch of text) {
    if (n++ >= points) break;
    offset += ch.length;
  }
  return offset;
}
