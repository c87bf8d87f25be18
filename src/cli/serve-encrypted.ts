// grid serve-encrypted: serve an ONNX model encrypted across two share holders and a crypto provider
// (docs/smpc.md); and `grid infer` on such a model, which finds it by the node it asks and runs the
// protocol instead of plain remote inference.

import * as fs from 'node:fs';
import type { Command } from 'commander';
import { GridClient, type Credentials } from '../core/client';
import { ErrorCodes, gridError, toGridError } from '../core/errors';
import type { NamedTensors } from '../core/protocol/tensor';
import { bindInputFiles } from '../compute/tensor-io';
import { deleteEncrypted, encryptedModelInfo, inferEncrypted, serveEncrypted } from '../federation/smpc';

export interface EncryptedCliHost {
  print(human: string, json: unknown): void;
  credentials(url: string): Credentials | undefined;
  timeoutMs(): number;
}

async function open(url: string, host: EncryptedCliHost, login: boolean): Promise<GridClient> {
  const credentials = host.credentials(url);
  if (login && credentials === undefined) throw gridError('UNAUTHENTICATED', `${url} holds a share: pass --user and --password (or GRID_USER/GRID_PASSWORD) valid on each share holder`);
  return GridClient.connect(url, { reconnect: { maxAttempts: 3, initialDelayMs: 200 }, connect: { handshakeTimeoutMs: host.timeoutMs() }, ...(credentials && { credentials }) });
}

export function registerServeEncrypted(program: Command, host: EncryptedCliHost): void {
  program.command('serve-encrypted <file>')
    .description('serve an ONNX model encrypted: its weights are split into two secret shares, one per share-holder node, with a third node as crypto provider; no node can read the model')
    .requiredOption('--id <id>', 'the model id on both share holders')
    .requiredOption('--nodes <url1,url2>', 'the two share-holder nodes (the first leads each query)')
    .requiredOption('--crypto-provider <url>', 'the crypto-provider node (deals randomness, never holds a share)')
    .action(async (file: string, o: { id: string; nodes: string; cryptoProvider: string }) => {
      const urls = o.nodes.split(',').map((u) => u.trim()).filter((u) => u !== '');
      if (urls.length !== 2) throw gridError('INVALID_INPUT', `--nodes takes exactly two share-holder addresses, comma-separated; got ${urls.length}`);
      if (!fs.existsSync(file)) throw gridError('NOT_FOUND', `no model file ${file}`);
      const bytes = fs.readFileSync(file);
      const clients: GridClient[] = [];
      try {
        for (const [url, login] of [[urls[0]!, true], [urls[1]!, true], [o.cryptoProvider, false]] as const) clients.push(await open(url, host, login));
        const served = await serveEncrypted(bytes, {
          id: o.id,
          holders: [{ client: clients[0]!, url: urls[0]! }, { client: clients[1]!, url: urls[1]! }],
          provider: { client: clients[2]!, url: o.cryptoProvider },
          timeoutMs: Math.max(60_000, host.timeoutMs()),
        });
        host.print(
          `served ${served.model_id} encrypted: ${served.params} parameters shared between ${served.holders[0].address} and ${served.holders[1].address}; crypto provider ${served.provider.address}`,
          { model_id: served.model_id, params: served.params, holders: served.holders, provider: served.provider, input: served.plan.input, output: served.plan.output },
        );
      } finally {
        for (const c of clients) c.dispose();
      }
    });
}

/**
 * `grid infer` on a model the node holds only a share of: undefined when `client`'s node holds no such
 * encrypted model (the caller reports its plain NOT_FOUND), else the outputs, after running the protocol
 * with the other share holder.
 */
export async function inferIfEncrypted(client: GridClient, id: string, inputs: readonly string[], host: EncryptedCliHost): Promise<NamedTensors | undefined> {
  let info;
  try {
    info = await encryptedModelInfo(client, id);
  } catch (err) {
    if (toGridError(err).code === ErrorCodes.NOT_FOUND || toGridError(err).code === ErrorCodes.UNKNOWN_TYPE) return undefined;
    throw err;
  }
  const feeds = bindInputFiles(inputs, {
    inputs: [{ name: info.input.name, dtype: 'float32', dims: [null, ...info.input.shape] }],
    outputs: [{ name: info.output.name, dtype: 'float32', dims: [null, ...info.output.shape] }],
  });
  const other = await open(info.peer.address, host, true);
  try {
    const y = await inferEncrypted(id, feeds[info.input.name]!, { holders: [client, other], timeoutMs: Math.max(120_000, host.timeoutMs()) });
    return { [info.output.name]: y };
  } finally {
    other.dispose();
  }
}

/**
 * `grid delete` on a model the node holds only a share of: undefined when it holds none (the caller
 * reports its plain NOT_FOUND), else deletes it from this node and from the other share holder.
 */
export async function deleteIfEncrypted(client: GridClient, id: string, host: EncryptedCliHost): Promise<{ model_id: string; encrypted: true; holders: string[] } | undefined> {
  let info;
  try {
    info = await encryptedModelInfo(client, id);
  } catch (err) {
    if (toGridError(err).code === ErrorCodes.NOT_FOUND || toGridError(err).code === ErrorCodes.UNKNOWN_TYPE) return undefined;
    throw err;
  }
  const other = await open(info.peer.address, host, true);
  try {
    await deleteEncrypted(id, [client, other]);
    return { model_id: id, encrypted: true, holders: [client.socket.status.url ?? '', info.peer.address] };
  } finally {
    other.dispose();
  }
}
