// The Jupyter messaging protocol's wire format (v5.3): a multipart ZeroMQ message
//   [routing ids…, "<IDS|MSG>", hmac, header, parent_header, metadata, content, buffers…]
// signed with HMAC over the four JSON frames. Pure functions over frames: the sockets are kernel.ts's.

import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { gridError } from '../../core/errors';

export const PROTOCOL_VERSION = '5.3';
const DELIMITER = Buffer.from('<IDS|MSG>');

/** The connection file a Jupyter front end writes and passes as `{connection_file}`. */
export interface ConnectionInfo {
  transport: 'tcp' | 'ipc';
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
  key: string;
  signature_scheme: string;
  kernel_name?: string;
}

export interface MessageHeader {
  msg_id: string;
  session: string;
  username: string;
  date: string;
  msg_type: string;
  version: string;
}

export interface JupyterMessage {
  /** ZeroMQ routing ids of the sender (shell/control/stdin), echoed on the reply. */
  identities: Buffer[];
  header: MessageHeader;
  /** The request this message answers or was caused by; `{}` when none. */
  parent_header: MessageHeader | Record<string, never>;
  metadata: Record<string, unknown>;
  content: Record<string, unknown>;
  buffers: Buffer[];
}

export function readConnectionFile(path: string): ConnectionInfo {
  let parsed: Partial<ConnectionInfo>;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<ConnectionInfo>;
  } catch (err) {
    throw gridError('INVALID_INPUT', `cannot read the Jupyter connection file ${path}: ${(err as Error).message}`);
  }
  for (const port of ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'] as const) {
    if (!Number.isInteger(parsed[port])) throw gridError('INVALID_INPUT', `the Jupyter connection file ${path} has no ${port}`);
  }
  // An empty key turns signing off: anyone who can reach the ports could run code as this user.
  if (typeof parsed.key !== 'string' || parsed.key === '') throw gridError('INVALID_INPUT', `the Jupyter connection file ${path} has no key; this kernel does not run unsigned`);
  return {
    transport: parsed.transport === 'ipc' ? 'ipc' : 'tcp',
    ip: typeof parsed.ip === 'string' ? parsed.ip : '127.0.0.1',
    key: parsed.key,
    signature_scheme: typeof parsed.signature_scheme === 'string' ? parsed.signature_scheme : 'hmac-sha256',
    ...(typeof parsed.kernel_name === 'string' && { kernel_name: parsed.kernel_name }),
    shell_port: parsed.shell_port!, iopub_port: parsed.iopub_port!, stdin_port: parsed.stdin_port!,
    control_port: parsed.control_port!, hb_port: parsed.hb_port!,
  };
}

/** `tcp://127.0.0.1:5555`, or `ipc://path-5555` as jupyter_client names its ipc endpoints. */
export function endpoint(info: ConnectionInfo, port: number): string {
  return info.transport === 'ipc' ? `ipc://${info.ip}-${port}` : `tcp://${info.ip}:${port}`;
}

/** Signs and checks messages with the connection's key. An empty key means no signing (Jupyter's rule). */
export class MessageSigner {
  private readonly algorithm: string | undefined;
  private readonly key: Buffer;

  constructor(scheme: string, key: string) {
    const m = /^hmac-(sha\d+)$/.exec(scheme);
    if (!m) throw gridError('INVALID_INPUT', `unsupported Jupyter signature scheme "${scheme}" (expected hmac-sha256)`);
    this.key = Buffer.from(key, 'utf8');
    this.algorithm = this.key.length > 0 ? m[1] : undefined;
  }

  sign(frames: readonly Buffer[]): string {
    if (!this.algorithm) return '';
    const hmac = createHmac(this.algorithm, this.key);
    for (const f of frames) hmac.update(f);
    return hmac.digest('hex');
  }

  verify(signature: Buffer, frames: readonly Buffer[]): boolean {
    if (!this.algorithm) return true;
    const expected = Buffer.from(this.sign(frames), 'utf8');
    return signature.length === expected.length && timingSafeEqual(signature, expected);
  }
}

/** `signature` is the hex HMAC the message came with ('' when unsigned). */
export type DecodeResult = { ok: true; message: JupyterMessage; signature: string } | { ok: false; reason: string };

/** Parses a received multipart message; a bad signature or malformed frame is a reason, never a throw. */
export function decode(frames: readonly Buffer[], signer: MessageSigner): DecodeResult {
  const at = frames.findIndex((f) => f.equals(DELIMITER));
  if (at < 0) return { ok: false, reason: 'no <IDS|MSG> delimiter' };
  if (frames.length < at + 6) return { ok: false, reason: `${frames.length - at - 1} frames after the delimiter, expected at least 5` };
  const signed = frames.slice(at + 2, at + 6);
  if (!signer.verify(frames[at + 1]!, signed)) return { ok: false, reason: 'bad signature' };
  try {
    const [header, parent, metadata, content] = signed.map((f) => JSON.parse(f.toString('utf8')) as unknown);
    if (!isObject(header) || typeof header.msg_type !== 'string' || typeof header.msg_id !== 'string') return { ok: false, reason: 'header without msg_type or msg_id' };
    return {
      ok: true,
      signature: frames[at + 1]!.toString('utf8'),
      message: {
        identities: frames.slice(0, at),
        header: header as unknown as MessageHeader,
        parent_header: (isObject(parent) ? parent : {}) as JupyterMessage['parent_header'],
        metadata: isObject(metadata) ? metadata : {},
        content: isObject(content) ? content : {},
        buffers: frames.slice(at + 6),
      },
    };
  } catch (err) {
    return { ok: false, reason: `a frame is not JSON: ${(err as Error).message}` };
  }
}

export function encode(message: Omit<JupyterMessage, 'buffers'> & { buffers?: Buffer[] }, signer: MessageSigner): Buffer[] {
  const signed = [message.header, message.parent_header, message.metadata, message.content].map((part) => Buffer.from(JSON.stringify(part), 'utf8'));
  return [...message.identities, DELIMITER, Buffer.from(signer.sign(signed), 'utf8'), ...signed, ...(message.buffers ?? [])];
}

export function makeHeader(msgType: string, session: string): MessageHeader {
  return { msg_id: randomUUID(), session, username: 'kernel', date: new Date().toISOString(), msg_type: msgType, version: PROTOCOL_VERSION };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
