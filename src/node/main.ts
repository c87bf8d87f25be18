// grid-node: starts a grid node. Prints exactly one line on stdout, `listening on ws://HOST:PORT`
// (wss:// with TLS; the extension and scripts read it); every log line goes through pino to stderr or
// --log-file.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, InvalidArgumentError } from 'commander';
import pino from 'pino';
import { gridError, toGridError } from '../core/errors';
import { localNodeFile } from '../core/local-node';
import { confirmedLocalNode } from '../core/local-node-start';
import { parseDatasetFlag, type DatasetSpec } from './datasets';
import { MIN_PASSWORD_LENGTH } from './auth';
import { defaultDataDir, DEFAULT_HOST, DEFAULT_PORT, GridNode, isAllInterfaces, isLoopbackHost, NODE_VERSION } from './server';

interface NodeConfigFile {
  host?: string;
  port?: number;
  data_dir?: string;
  name?: string;
  demo_datasets?: boolean;
  datasets?: { name: string; path: string; tags?: string[]; description?: string; label?: string }[];
  allow_origins?: string[];
  /** URL prefixes non-admin FL hosts may name as server_config.authentication.endpoint. */
  fl_auth_endpoints?: string[];
  tls_cert?: string;
  tls_key?: string;
}

function parsePort(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('a port is an integer from 0 to 65535 (0 picks a free one)');
  return n;
}

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };

/** A duration: `90` or `90s`, `500ms`, `30m`, `24h`, `7d`; in milliseconds. */
export function parseDuration(v: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`"${v}" is not a duration: a number of seconds, or one with a unit (500ms, 90s, 30m, 24h, 7d)`);
  const ms = Number(m[1]) * UNIT_MS[m[2] ?? 's']!;
  if (!(ms > 0 && ms <= 365 * 86_400_000)) throw new InvalidArgumentError(`${v} is not a duration from 1 ms to a year`);
  return ms;
}

function parseThreads(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 256) throw new InvalidArgumentError('a thread count is a whole number from 1 to 256');
  return n;
}

function parseLeaseMs(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 100 || n > 3_600_000) throw new InvalidArgumentError('a lease is a whole number of milliseconds from 100 to 3600000');
  return n;
}

function leaseFromEnv(v: string): number {
  try {
    return parseLeaseMs(v);
  } catch (err) {
    throw gridError('INVALID_MESSAGE', `GRID_CLAIM_LEASE_MS=${JSON.stringify(v)}: ${(err as Error).message}`);
  }
}

/** The repo's media/datasets folder, found from this file (src/node in development, dist/ when bundled). */
function demoDatasetsDir(): string {
  for (let dir = __dirname, i = 0; i < 5; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'media', 'datasets');
    if (fs.existsSync(path.join(candidate, 'iris.csv'))) return candidate;
  }
  throw gridError('INVALID_DATASET', `--demo-datasets: no media/datasets folder found above ${__dirname}`);
}

export function demoDatasets(): DatasetSpec[] {
  const dir = demoDatasetsDir();
  return [
    { name: 'iris', path: path.join(dir, 'iris.csv'), tags: ['uci', 'tabular', 'classification', 'iris'], description: 'UCI Iris: 150 flowers, 4 measurements, 3 species (R. A. Fisher, 1936). CC BY 4.0.' },
    { name: 'wine', path: path.join(dir, 'wine_data.csv'), tags: ['uci', 'tabular', 'classification', 'wine'], description: 'UCI Wine: 178 wines, 13 chemical measurements, 3 cultivars (M. Forina et al.). CC BY 4.0.' },
    { name: 'breast_cancer', path: path.join(dir, 'breast_cancer.csv'), tags: ['uci', 'tabular', 'classification', 'medical'], description: 'UCI Breast Cancer Wisconsin (Diagnostic): 569 samples, 30 features, malignant/benign (W. H. Wolberg et al., 1995). CC BY 4.0.' },
    { name: 'digits', path: path.join(dir, 'digits.csv.gz'), label: '64', tags: ['uci', 'image', 'classification', 'digits'], description: 'UCI Optical Recognition of Handwritten Digits (test set): 1797 8x8 images, digits 0-9 (E. Alpaydin, C. Kaynak, 1998). CC BY 4.0.' },
  ];
}

function readConfig(file: string): NodeConfigFile & { baseDir: string } {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw gridError('INVALID_MESSAGE', `--config ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw gridError('INVALID_MESSAGE', `--config ${file}: expected a JSON object`);
  const c = json as NodeConfigFile;
  if (c.datasets !== undefined && !Array.isArray(c.datasets)) throw gridError('INVALID_MESSAGE', `--config ${file}: "datasets" must be an array`);
  if (c.allow_origins !== undefined && (!Array.isArray(c.allow_origins) || c.allow_origins.some((o) => typeof o !== 'string'))) {
    throw gridError('INVALID_MESSAGE', `--config ${file}: "allow_origins" must be an array of origins such as "https://app.example.org"`);
  }
  if (c.fl_auth_endpoints !== undefined && (!Array.isArray(c.fl_auth_endpoints) || c.fl_auth_endpoints.some((u) => typeof u !== 'string'))) {
    throw gridError('INVALID_MESSAGE', `--config ${file}: "fl_auth_endpoints" must be an array of URLs such as "https://auth.example.org/fl/"`);
  }
  for (const key of ['tls_cert', 'tls_key'] as const) {
    if (c[key] !== undefined && typeof c[key] !== 'string') throw gridError('INVALID_MESSAGE', `--config ${file}: "${key}" must be a file path`);
  }
  for (const [i, d] of (c.datasets ?? []).entries()) {
    if (typeof d?.name !== 'string' || typeof d.path !== 'string') throw gridError('INVALID_MESSAGE', `--config ${file}: datasets[${i}] needs "name" and "path" strings`);
  }
  return { ...c, baseDir: path.dirname(path.resolve(file)) };
}

/** The PEM certificate and key files, both or neither. */
function readTls(certFile: string | undefined, keyFile: string | undefined): { cert: Buffer; key: Buffer } | undefined {
  if (certFile === undefined && keyFile === undefined) return undefined;
  if (certFile === undefined || keyFile === undefined) throw gridError('TLS_ERROR', `TLS needs both --tls-cert and --tls-key; only ${certFile !== undefined ? '--tls-cert' : '--tls-key'} was given`);
  const read = (flag: string, file: string) => {
    try {
      return fs.readFileSync(file);
    } catch (err) {
      throw gridError('TLS_ERROR', `${flag} ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
    }
  };
  return { cert: read('--tls-cert', certFile), key: read('--tls-key', keyFile) };
}

/**
 * Keeps serving when a request handler rejects unexpectedly: one bad request must not take down every
 * user's node. Installed by the CLI only, so tests of GridNode (which start it directly) still fail loudly.
 */
function keepServingOnUnhandledRejection(logger: pino.Logger): void {
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason }, 'unhandled rejection (a bug: please report it); the node keeps serving');
  });
}

export async function main(argv: string[]): Promise<void> {
  const program = new Command('grid-node')
    .description('Run a grid node: hosts ONNX models, runs remote inference, keeps datasets on this machine.')
    .version(NODE_VERSION)
    .option('--host <host>', `interface to listen on (default ${DEFAULT_HOST})`)
    .option('--port <port>', `port to listen on, 0 for a free one (default ${DEFAULT_PORT})`, parsePort)
    .option('--data-dir <dir>', `where models and metadata live (default ${defaultDataDir()})`)
    .option('--name <name>', 'name shown to clients (default: the host name)')
    .option('--dataset <spec>', 'register a dataset: NAME=PATH[:label=COL][:tags=a,b][:description=TEXT] (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--config <file>', 'JSON config: {host, port, data_dir, name, demo_datasets, datasets: [{name, path, tags, description, label}]}')
    .option('--demo-datasets', 'register the bundled UCI datasets (iris, wine, breast_cancer, digits)')
    .option('--local', `be this user's local node: loopback only, a free port unless --port, and a runtime record (${localNodeFile()}, mode 0600) through which the CLI, the extension and notebooks find it and sign in as admin`)
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace', 'info')
    .option('--log-file <file>', 'write logs to this file instead of stderr')
    .option('--allow-origin <origin>', 'let web pages from this origin (scheme://host[:port]) use the node; repeatable; none by default', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--fl-auth-endpoint <url>', 'let users who are not admins host FL processes whose workers\' tokens are checked at this URL (or below it); repeatable; none by default (admins may use any)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--tls-cert <file>', 'serve https/wss with this PEM certificate (chain); needs --tls-key')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .option('--intra-op-threads <n>', 'threads onnxruntime gives one inference (default: the machine\'s cores, at most 4, and one for small runs of models up to 4 MiB); fewer leave cores to other work', parseThreads)
    .option('--no-shared-memory', 'refuse shared-memory regions from clients on this machine (they then send tensors over the socket)')
    .option('--database <url>', 'keep the metadata in PostgreSQL (postgres://user:password@host:port/db) instead of <data-dir>/meta.db, so several replicas serve one node (docs/replicas.md); or set GRID_DATABASE')
    .option('--blobs <dir>', 'keep model and checkpoint blobs in this directory (shared storage for replicas) instead of <data-dir>')
    .option('--upload-expiry <duration>', 'replicas (--database and --blobs): remove a partial upload in the shared blob dir once it has not moved for this long (default 24h; or set GRID_UPLOAD_EXPIRY)', parseDuration)
    .option('--blob-grace <duration>', 'replicas: remove a blob in the shared blob dir that nothing refers to once it is this old (default 1h; or set GRID_BLOB_GRACE)', parseDuration)
    .option('--claim-lease-ms <ms>', 'how long a replica\'s claim on a training job holds without its heartbeat; another replica takes the job over after that (default 15000; or GRID_CLAIM_LEASE_MS)', parseLeaseMs)
    .option('--trust-proxy <addr[,addr...]>', 'reverse proxies (addresses, CIDR ranges, or "loopback") whose X-Forwarded-For names the client, so per-address limits apply per client (docs/replicas.md); repeatable; or set GRID_TRUST_PROXY', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--check-replies', 'validate every reply the node sends against its schema, and answer GRID_ERR_INTERNAL instead of one that does not match (for tests and debugging; costs a schema check per request); or set GRID_CHECK_REPLIES=1')
    .addHelpText('after', `
Environment:
  GRID_DATABASE        like --database (keeps the password out of the process list).
  GRID_UPLOAD_EXPIRY   like --upload-expiry.
  GRID_BLOB_GRACE      like --blob-grace.
  GRID_CLAIM_LEASE_MS  like --claim-lease-ms.
  GRID_TRUST_PROXY     like --trust-proxy (comma-separated), when no --trust-proxy is given.
  GRID_CHECK_REPLIES   1: like --check-replies.
  GRID_ADMIN_PASSWORD  password of the admin user, used on the first start (when the node creates
                       admin); at least ${MIN_PASSWORD_LENGTH} characters. Unset: one is generated and shown once.

Listening on anything but the loopback without --tls-cert/--tls-key sends passwords in the clear.`)
    .showHelpAfterError();
  program.parse(argv);
  const o = program.opts<{
    host?: string; port?: number; dataDir?: string; name?: string; dataset: string[]; config?: string; demoDatasets?: boolean; local?: boolean; logLevel: string; logFile?: string;
    allowOrigin: string[]; flAuthEndpoint: string[]; tlsCert?: string; tlsKey?: string; sharedMemory: boolean; intraOpThreads?: number; database?: string; blobs?: string; claimLeaseMs?: number;
    uploadExpiry?: number; blobGrace?: number; trustProxy: string[]; checkReplies?: boolean;
  }>();

  const logger = pino({ name: 'grid-node', level: o.logLevel }, o.logFile ? pino.destination({ dest: o.logFile, mkdir: true, sync: false }) : pino.destination({ dest: 2, sync: true }));
  try {
    const config = o.config ? readConfig(o.config) : undefined;
    const datasets: DatasetSpec[] = [];
    if (o.demoDatasets || config?.demo_datasets) datasets.push(...demoDatasets());
    for (const d of config?.datasets ?? []) {
      datasets.push({ ...d, path: path.resolve(config!.baseDir, d.path) });
    }
    datasets.push(...o.dataset.map(parseDatasetFlag));
    const dataDir = o.dataDir ?? (config?.data_dir !== undefined ? path.resolve(config.baseDir, config.data_dir) : defaultDataDir());
    const fromConfig = (p: string | undefined) => (p === undefined ? undefined : path.resolve(config!.baseDir, p));
    const tls = o.tlsCert !== undefined || o.tlsKey !== undefined ? readTls(o.tlsCert, o.tlsKey) : readTls(fromConfig(config?.tls_cert), fromConfig(config?.tls_key));
    const host = o.host ?? config?.host ?? DEFAULT_HOST;
    if (o.local) {
      if (host !== DEFAULT_HOST) throw gridError('INVALID_MESSAGE', `--local listens on ${DEFAULT_HOST} only (its record signs in whoever can read it); drop --host ${host}`);
      // Trusted only if the node it names answers with its id: after a crash the record stays, and its pid may be another program's now.
      const running = await confirmedLocalNode(localNodeFile());
      if (running !== undefined) throw gridError('ALREADY_EXISTS', `a local node already runs at ${running.url} (pid ${running.pid}, data in ${running.data_dir}); use it, or stop it first`);
    }
    const database = o.database ?? (process.env.GRID_DATABASE !== undefined && process.env.GRID_DATABASE !== '' ? process.env.GRID_DATABASE : undefined);
    if (database !== undefined && !/^postgres(ql)?:\/\//i.test(database)) {
      throw gridError('INVALID_MESSAGE', '--database takes a PostgreSQL URL: postgres://user:password@host:port/database');
    }
    const fromEnv = (name: string) => {
      const v = process.env[name];
      if (v === undefined || v === '') return undefined;
      try {
        return parseDuration(v);
      } catch (err) {
        throw gridError('INVALID_MESSAGE', `${name}: ${(err as Error).message}`);
      }
    };
    const uploadExpiryMs = o.uploadExpiry ?? fromEnv('GRID_UPLOAD_EXPIRY');
    const blobGraceMs = o.blobGrace ?? fromEnv('GRID_BLOB_GRACE');
    const envLease = process.env.GRID_CLAIM_LEASE_MS;
    const claimLeaseMs = o.claimLeaseMs ?? (envLease !== undefined && envLease !== '' ? leaseFromEnv(envLease) : undefined);
    const node = await GridNode.start({
      host,
      ...(claimLeaseMs !== undefined && { training: { claimLeaseMs } }),
      ...(database !== undefined && { database }),
      ...(uploadExpiryMs !== undefined && { uploadExpiryMs }),
      ...(blobGraceMs !== undefined && { blobGraceMs }),
      ...(o.blobs !== undefined && { blobsDir: path.resolve(o.blobs) }),
      port: o.port ?? config?.port ?? (o.local ? 0 : DEFAULT_PORT),
      dataDir,
      ...(o.local && { localRecordFile: localNodeFile() }),
      ...((o.name ?? config?.name) !== undefined && { name: (o.name ?? config?.name)! }),
      logger,
      datasets,
      allowOrigins: o.allowOrigin.length > 0 ? o.allowOrigin : config?.allow_origins ?? [],
      fl: { authEndpoints: o.flAuthEndpoint.length > 0 ? o.flAuthEndpoint : config?.fl_auth_endpoints ?? [] },
      ...(tls !== undefined && { tls }),
      ...(!o.sharedMemory && { sharedMemory: { enabled: false } }),
      ...(o.intraOpThreads !== undefined && { intraOpThreads: o.intraOpThreads }),
      trustProxy: o.trustProxy.length > 0 ? o.trustProxy : (process.env.GRID_TRUST_PROXY ?? '').split(',').filter((v) => v.trim() !== ''),
      ...(o.checkReplies === true && { checkReplies: true }),
    });
    keepServingOnUnhandledRejection(logger);
    if (isAllInterfaces(host)) {
      process.stderr.write(isLoopbackHost(new URL(node.url).hostname)
        ? `grid-node: listening on all interfaces (${host}), but this machine has no network address yet; locally: ${node.url}\n`
        : `grid-node: listening on all interfaces (${host}); other machines can reach it as ${node.url}\n`);
    }
    if (!isLoopbackHost(host) && !node.secure) {
      process.stderr.write(
        `\n  WARNING: this grid node listens on ${isAllInterfaces(host) ? 'all interfaces' : host} without TLS.\n` +
        '  Passwords, session tokens, models and tensors cross the network in the clear.\n' +
        '  Give it --tls-cert FILE --tls-key FILE (or put it behind a TLS proxy).\n\n');
    }
    if (node.initialAdminPassword !== undefined) {
      process.stderr.write(
        `\n  The grid node created its admin user.\n    user:     admin\n    password: ${node.initialAdminPassword}\n` +
        '  This password is shown only once. Set GRID_ADMIN_PASSWORD before the first start to choose it.\n\n');
    }
    process.stdout.write(`listening on ${node.url}\n`);
    let stopping = false;
    const stop = (signal: string) => {
      if (stopping) {
        logger.warn({ signal }, 'second signal: exiting without waiting');
        process.exit(130);
      }
      stopping = true;
      logger.info({ signal }, 'stopping');
      node.close().then(() => { logger.flush(); process.exit(0); }, (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      });
    };
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGTERM', () => stop('SIGTERM'));
  } catch (err) {
    const e = toGridError(err);
    logger.error({ err, code: e.code }, 'grid node failed to start');
    logger.flush();
    process.stderr.write(`grid-node: ${e.code}: ${e.message}\n`);
    process.exit(1);
  }
}

if (require.main === module) void main(process.argv);
