// grid: the grid client from a terminal (PyGrid's WebsocketGridClient operations as commands).
// Output: a short table for people, `--json` for scripts. Failure: the coded error and exit code 1.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, Option } from 'commander';
import { GridClient, type Credentials } from '../core/client';
import { gridError, toGridError } from '../core/errors';
import { defaultDataDir, findLocalNode, localNodeFile, sameUrl, type LocalNodeRecord } from '../core/local-node';
import { confirmedLocalNode } from '../core/local-node-start';
import { modelRef, refOf, type DatasetInfo, type ModelInfo } from '../core/protocol/messages';
import { bindInputFiles, outputsToJson, writeOutputs } from '../compute/tensor-io';
import { registerFlCommands } from './fl';
import { registerFlSimulateCommand } from './fl-simulate';
import { registerKernelCommands } from './kernel';
import { registerTrainCommands } from './train';
import { deleteIfEncrypted, inferIfEncrypted, registerServeEncrypted } from './serve-encrypted';

interface GlobalOptions { node?: string; user?: string; password?: string; json?: boolean; timeout: number }

const DEFAULT_NODE = 'ws://127.0.0.1:5000';

class Cli {
  private readonly out: NodeJS.WritableStream;
  private readonly err: NodeJS.WriteStream | NodeJS.WritableStream;
  private client: GridClient | undefined;
  /**
   * This user's local node, once its node answered get-id with the record's id (before each command
   * that connects): a record's live pid alone may be another process, and its URL another node, which
   * must not be handed the admin token.
   */
  private local: LocalNodeRecord | undefined;
  /** Set by a command that ends without an error but with news for scripts (grid fl join: rejected). */
  private exitCode = 0;
  program: Command;

  constructor(out: NodeJS.WritableStream, err: NodeJS.WritableStream) {
    this.out = out;
    this.err = err;
    this.program = this.build();
  }

  private opts(): GlobalOptions {
    return this.program.opts<GlobalOptions>();
  }

  private print(human: string, json: unknown): void {
    this.out.write(this.opts().json ? `${JSON.stringify(json, null, 2)}\n` : `${human}\n`);
  }

  /**
   * This user's local node, when the command would use its URL or token: confirmed first (it answers get-id
   * with the record's id), so neither goes to whatever listens at a stale record's URL. No probe when there
   * is no record, or when --node names another node or the user signs in with a password at the one named
   * (the record is then not used). A live record that does not answer as itself is an error when it would
   * pick the node: falling back to the default address would mislead (a busy local node is still running).
   */
  private async localNodeToUse(): Promise<LocalNodeRecord | undefined> {
    const o = this.opts();
    const record = findLocalNode(localNodeFile());
    if (record === undefined) return undefined;
    const signsIn = (o.user ?? process.env.GRID_USER) !== undefined && (o.password ?? process.env.GRID_PASSWORD) !== undefined;
    if (o.node !== undefined && (signsIn || !sameUrl(o.node, record.url))) return undefined;
    const confirmed = await confirmedLocalNode(localNodeFile());
    if (confirmed === undefined && o.node === undefined) {
      throw gridError('NOT_CONNECTED', `this user's local node (pid ${record.pid}, ${record.url}, record ${localNodeFile()}) did not answer as itself; wait until it has started, stop it, or pass --node`);
    }
    return confirmed;
  }

  /** --node, else GRID_NODE, else this user's local node, else the default address. */
  private nodeUrl(): string {
    return this.opts().node ?? this.local?.url ?? DEFAULT_NODE;
  }

  /** --user/--password (or GRID_USER/GRID_PASSWORD); on this user's local node, its record's token. */
  private credentials(url: string): Credentials | undefined {
    const o = this.opts();
    const user = o.user ?? process.env.GRID_USER;
    const password = o.password ?? process.env.GRID_PASSWORD;
    if (user !== undefined && password !== undefined) return { username: user, password };
    const local = this.local;
    if (local !== undefined && sameUrl(local.url, url)) return { token: local.token };
    return undefined;
  }

  private async connect(needsLogin: boolean): Promise<GridClient> {
    const o = this.opts();
    const url = this.nodeUrl();
    const credentials = this.credentials(url);
    if (credentials === undefined && needsLogin) throw gridError('UNAUTHENTICATED', `this command changes the node or uses its compute: pass --user and --password (or set GRID_USER and GRID_PASSWORD); ${url} is not this user's local node, which would sign you in by itself`);
    this.client = await GridClient.connect(url, { reconnect: { maxAttempts: 3, initialDelayMs: 200 }, connect: { handshakeTimeoutMs: o.timeout }, ...(credentials && { credentials }) });
    return this.client;
  }

  private encryptedHost() {
    return { print: (human: string, json: unknown) => this.print(human, json), credentials: (url: string) => this.credentials(url), timeoutMs: () => this.opts().timeout };
  }

  /** Progress on a TTY only: scripts and pipes get clean output. */
  private progress(label: string): ((done: number, total: number) => void) | undefined {
    const tty = (this.err as NodeJS.WriteStream).isTTY === true && !this.opts().json;
    if (!tty) return undefined;
    let last = -1;
    return (done, total) => {
      const pct = total === 0 ? 100 : Math.floor((done / total) * 100);
      if (pct === last) return;
      last = pct;
      this.err.write(`\r${label} ${pct}% (${mib(done)} / ${mib(total)})${done >= total ? '\n' : ''}`);
    };
  }

  private build(): Command {
    const program = new Command('grid')
      .description('Talk to a grid node: serve ONNX models, run remote inference, list datasets, train on a node\'s data (train, watch, jobs, cancel), federate training across nodes (fedavg) and run model-centric FL processes (fl host, join, status, checkpoint).')
      .addOption(new Option('--node <url>', `node address (default: this user's local node if one runs, else ${DEFAULT_NODE})`).env('GRID_NODE'))
      .addOption(new Option('--user <name>', 'user name').env('GRID_USER'))
      .addOption(new Option('--password <password>', 'password').env('GRID_PASSWORD'))
      .option('--json', 'print JSON instead of text')
      .option('--timeout <ms>', 'connection timeout in ms', (v) => Number(v), 10_000)
      .exitOverride()
      // `grid local` makes no connection; every other command may use the record's URL or token.
      .hook('preAction', async (_program, action) => {
        if (action.name() !== 'local') this.local = await this.localNodeToUse();
      })
      .configureOutput({ writeOut: (s) => this.out.write(s), writeErr: (s) => this.err.write(s) });

    program.command('id').description("the node's id, name, version and capabilities").action(async () => {
      const c = await this.connect(false);
      const id = await c.getId();
      this.print(`${id.name} (${id.id}) version ${id.version}\ncapabilities: ${id.capabilities.join(', ')}`, id);
    });

    program.command('local').description("this user's local node: its address, process and data folder (no connection made)").action(() => {
      const r = findLocalNode();
      const file = localNodeFile();
      if (r === undefined) {
        this.print(`no local node runs (start one: grid-node --local --demo-datasets, or "Grid: Start Local Node" in VS Code)\nrecord: ${file}`, { running: false, record_file: file, data_dir: defaultDataDir() });
        return;
      }
      this.print(`${r.name} (${r.node_id}) at ${r.url}, pid ${r.pid}, since ${r.started}\ndata: ${r.data_dir}\nrecord: ${file} (signs this user in as ${r.user})`,
        { running: true, url: r.url, pid: r.pid, node_id: r.node_id, name: r.name, data_dir: r.data_dir, started: r.started, record_file: file });
    });

    program.command('models').description('list the models hosted on the node: each at its latest version (name@N), or every version with --all')
      .option('--all', 'every version of every model, with its lineage')
      .action(async (o: { all?: boolean }) => {
        const c = await this.connect(false);
        const models = await c.listModels(o.all ? { allVersions: true } : {});
        this.print(o.all ? versionTable(models) : modelTable(models), { models });
      });

    program.command('info <model>').description("one model's metadata and signature; <model> is name (the latest version) or name@N")
      .option('--version <n>', 'this version of the model (same as name@N)')
      .action(async (model: string, o: { version?: string }) => {
        const c = await this.connect(false);
        const m = await c.modelInfo(refArg(model, o.version));
        const sig = (l: ModelInfo['signature']['inputs']) => l.map((s) => `  ${s.name}: ${s.dtype} [${s.dims.map((d) => d ?? '?').join(', ')}]`).join('\n');
        this.print(`${modelRef(m)}${versionNote(m)}  ${m.name}  ${mib(m.size)}  sha256 ${m.sha256}${lineage(m)}\nowner ${m.owner}, created ${m.created}, download ${yes(m.allow_download)}, remote inference ${yes(m.allow_remote_inference)}\ninputs:\n${sig(m.signature.inputs)}\noutputs:\n${sig(m.signature.outputs)}`, { model: m });
      });

    program.command('serve <file>').description('upload an ONNX model and host it (an id the node has already: with --new-version, as its next version)')
      .option('--id <id>', 'model id (default: the file name without .onnx)')
      .option('--name <name>', 'display name')
      .option('--new-version', 'if the node has a model with this id, store the file as its next version')
      .option('--model-version <n>', 'the version number to store (default: the next one)')
      .option('--allow-download', 'let other users download the model')
      .option('--allow-remote-inference', 'let other users run the model on this node')
      .action(async (file: string, o: { id?: string; name?: string; newVersion?: boolean; modelVersion?: string; allowDownload?: boolean; allowRemoteInference?: boolean }) => {
        if (!fs.existsSync(file)) throw gridError('INVALID_MODEL', `no file ${file}`);
        const c = await this.connect(true);
        const id = o.id ?? path.basename(file).replace(/\.onnx$/i, '');
        const onProgress = this.progress(`uploading ${path.basename(file)}`);
        const m = await c.hostModel(path.resolve(file), {
          id, allowDownload: o.allowDownload ?? false, allowRemoteInference: o.allowRemoteInference ?? false,
          ...(o.name !== undefined && { name: o.name }), ...(o.modelVersion !== undefined && { version: o.modelVersion }),
          ...(o.newVersion && { newVersion: true }),
          ...(onProgress && { onProgress }),
        });
        this.print(`hosted ${modelRef(m)} (${mib(m.size)}, sha256 ${m.sha256.slice(0, 12)}…)`, { model: m });
      });

    program.command('permissions <model>').description('show or change who else may download or run a model (its owner or an admin): name@N one version, name every version; flags not given stay as they are')
      .option('--allow-download', 'let other users download the model')
      .option('--no-allow-download', 'do not let other users download the model')
      .option('--allow-remote-inference', 'let other users run the model on this node')
      .option('--no-allow-remote-inference', 'do not let other users run the model')
      .action(async (id: string, o: { allowDownload?: boolean; allowRemoteInference?: boolean }) => {
        const change = o.allowDownload !== undefined || o.allowRemoteInference !== undefined;
        const c = await this.connect(change);
        const m = change ? await c.setModelPermissions(id, o) : await c.modelInfo(id);
        this.print(`${m.id} (owner ${m.owner}): download ${yes(m.allow_download)}, remote inference ${yes(m.allow_remote_inference)}`,
          { model_id: m.id, owner: m.owner, allow_download: m.allow_download, allow_remote_inference: m.allow_remote_inference });
      });

    program.command('download <model>').description('download a model (yours, or one whose owner allowed downloads); <model> is name (the latest version) or name@N')
      .requiredOption('-o, --output <file|dir/>', 'where to write the .onnx file (into a folder: <model>.onnx there)')
      .option('--version <n>', 'this version of the model (same as name@N)')
      .action(async (model: string, o: { output: string; version?: string }) => {
        const ref = refArg(model, o.version);
        const dest = downloadPath(ref, o.output);
        const c = await this.connect(true);
        const onProgress = this.progress(`downloading ${ref}`);
        const m = await c.downloadModel(ref, dest, onProgress ? { onProgress } : {});
        this.print(`downloaded ${modelRef(m)} to ${path.relative(process.cwd(), dest) || dest} (${mib(m.size)}, sha256 verified)`, { model: m, path: dest });
      });

    program.command('delete <model>').description('delete one version (name@N or --version N), or every version of a model (--all)')
      .option('--version <n>', 'this version of the model (same as name@N)')
      .option('--all', 'every version of the model')
      .action(async (model: string, o: { version?: string; all?: boolean }) => {
        const ref = refArg(model, o.version);
        const c = await this.connect(true);
        let r;
        try {
          r = await c.deleteModel(ref, o.all ? { allVersions: true } : {});
        } catch (err) {
          // A model served encrypted is deleted from both its share holders.
          const enc = toGridError(err).code === 'GRID_ERR_NOT_FOUND' && ref === model ? await deleteIfEncrypted(c, model, this.encryptedHost()) : undefined;
          if (enc === undefined) throw err;
          this.print(`deleted encrypted model ${enc.model_id} from its share holders ${enc.holders.join(' and ')}`, enc);
          return;
        }
        const versions = r.versions ?? [];
        const what = o.all ? `${r.model_id} (${versions.length === 1 ? 'version' : 'versions'} ${versions.join(', ')})` : versions.length === 1 ? `${r.model_id}@${versions[0]}` : ref;
        const left = typeof r.latest_version === 'string' ? `; ${r.model_id}@${r.latest_version} is the latest` : '';
        this.print(`deleted ${what}${left}`, r);
      });

    program.command('infer <model>').description('run a model on the node with input tensors from files; <model> is name (the latest version) or name@N')
      .requiredOption('-i, --input <[NAME=]FILE>', 'an input tensor: .npy, .pb (TensorProto) or .json; unnamed inputs bind in order (repeatable)', (v: string, acc: string[] | undefined) => [...(acc ?? []), v])
      .option('-o, --output <OUT.json|DIR/>', 'write outputs as one JSON file, or one .npy per output into DIR/')
      .option('--outputs <names>', 'comma-separated output names to compute (default: all)')
      .option('--version <n>', 'this version of the model (same as name@N)')
      .action(async (name: string, o: { input: string[]; output?: string; outputs?: string; version?: string }) => {
        const c = await this.connect(true);
        // Resolved once: the version read for its signature is the version that runs.
        const model = await c.modelInfo(refArg(name, o.version)).catch(async (err: unknown) => {
          // A model this node holds only a share of runs the encrypted protocol (src/cli/serve-encrypted.ts).
          const encrypted = toGridError(err).code === 'GRID_ERR_NOT_FOUND' && o.version === undefined ? await inferIfEncrypted(c, name, o.input, this.encryptedHost()) : undefined;
          if (encrypted === undefined) throw err;
          return { encrypted };
        });
        const outputs = 'encrypted' in model
          ? model.encrypted
          : await c.runInference(refOf(model), bindInputFiles(o.input, model.signature), o.outputs ? { outputs: o.outputs.split(',') } : {});
        if (o.output !== undefined) {
          const written = writeOutputs(outputs, o.output);
          this.print(`wrote ${written.join(', ')}`, { written });
        } else {
          this.out.write(`${JSON.stringify(outputsToJson(outputs))}\n`);
        }
      });

    program.command('datasets').description('list datasets (metadata and schema only; rows stay on the node)')
      .option('-t, --tag <tag>', 'only datasets with this tag (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
      .action(async (o: { tag: string[] }) => {
        const c = await this.connect(false);
        const datasets = o.tag.length > 0 ? await c.searchDatasets(o.tag) : await c.listDatasets();
        this.print(datasetTable(datasets), { datasets });
      });

    program.command('peers').description("the node's links to other nodes").action(async () => {
      const c = await this.connect(false);
      const peers = await c.listPeers();
      this.print(peers.length === 0 ? 'no peers' : peers.map((p) => `${p.id}  ${p.name}  ${p.address}  ${p.status}`).join('\n'), { peers });
    });

    program.command('add-user <name>').description('create a user on the node (admin only); the password comes from GRID_NEW_PASSWORD or --new-password')
      .addOption(new Option('--new-password <password>', "the new user's password").env('GRID_NEW_PASSWORD'))
      .option('--admin', 'make the user an admin')
      .action(async (name: string, o: { newPassword?: string; admin?: boolean }) => {
        if (o.newPassword === undefined) throw gridError('INVALID_MESSAGE', 'add-user needs the password: set GRID_NEW_PASSWORD or pass --new-password');
        const c = await this.connect(true);
        const u = await c.addUser(name, o.newPassword, o.admin ? 'admin' : 'user');
        this.print(`added ${u.role} ${u.username}`, u);
      });

    program.command('connect <address>').description('link the node to another node').action(async (address: string) => {
      const c = await this.connect(true);
      const peer = await c.connectNode(address);
      this.print(`connected to ${peer.name} (${peer.id}) at ${peer.address}`, { peer });
    });

    registerServeEncrypted(program, this.encryptedHost());
    const host = {
      connect: (login: boolean) => this.connect(login),
      print: (human: string, json: unknown) => this.print(human, json),
      progressStream: () => (this.opts().json ? undefined : { out: this.err, tty: (this.err as NodeJS.WriteStream).isTTY === true }),
      credentials: (url: string) => this.credentials(url),
      timeoutMs: () => this.opts().timeout,
    };
    // train, watch, jobs, cancel, fedavg (src/cli/train.ts)
    registerTrainCommands(program, host);
    // fl host, join, status, checkpoint (src/cli/fl.ts)
    registerFlCommands(program, { ...host, setExitCode: (code) => { this.exitCode = code; } });
    registerFlSimulateCommand(program, { ...host, setExitCode: (code) => { this.exitCode = code; } });

    // kernel install / uninstall (src/cli/kernel.ts)
    registerKernelCommands(program, { print: (human, json) => this.print(human, json) });

    return program;
  }

  async run(argv: string[]): Promise<number> {
    try {
      await this.program.parseAsync(argv);
      return this.exitCode;
    } catch (err) {
      const ce = err as { code?: string; exitCode?: number };
      if (typeof ce.code === 'string' && ce.code.startsWith('commander.')) {
        // Help and version exit 0; usage errors were already printed by commander.
        return ce.exitCode ?? 2;
      }
      const e = toGridError(err);
      if (this.opts().json) this.out.write(`${JSON.stringify({ error: e.toWire() })}\n`);
      this.err.write(`grid: ${e.code}: ${e.message}\n`);
      return 1;
    } finally {
      this.client?.dispose();
    }
  }
}

/** `-o model.onnx` as given; `-o dir/` or an existing folder gets `<id>.onnx` inside it (created when missing). */
export function downloadPath(id: string, output: string): string {
  const resolved = path.resolve(output);
  const isDir = /[\\/]$/.test(output) || (fs.existsSync(resolved) && fs.statSync(resolved).isDirectory());
  if (!isDir) return resolved;
  fs.mkdirSync(resolved, { recursive: true });
  return path.join(resolved, `${id.replace(/[^A-Za-z0-9._@-]/g, '_')}.onnx`);
}

const mib = (n: number) => (n >= 1024 * 1024 ? `${(n / 1024 / 1024).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
const yes = (b: boolean) => (b ? 'yes' : 'no');

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}

/** `name` with `--version N` → `name@N` (the node checks the form); a ref that already names a version takes no --version. */
export function refArg(model: string, version: string | undefined): string {
  if (version === undefined) return model;
  if (model.includes('@')) throw gridError('INVALID_INPUT', `${model} names a version already; drop --version ${version}, or give the model's name alone`);
  return `${model}@${version}`;
}

function versionNote(m: ModelInfo): string {
  if (m.latest_version === undefined) return '';
  return m.latest_version === m.version ? ` (latest of ${m.versions ?? 1})` : ` (latest is ${m.id}@${m.latest_version})`;
}

function lineage(m: ModelInfo): string {
  if (m.parent === undefined) return '';
  return `\nfrom ${m.parent}${m.job_id !== undefined ? ` (training job ${m.job_id})` : ''}`;
}

function modelTable(models: ModelInfo[]): string {
  if (models.length === 0) return 'no models';
  return table([['MODEL', 'VERSIONS', 'SIZE', 'DOWNLOAD', 'INFERENCE', 'OWNER', 'CREATED'],
    ...models.map((m) => [modelRef(m), String(m.versions ?? 1), mib(m.size), yes(m.allow_download), yes(m.allow_remote_inference), m.owner, m.created])]);
}

function versionTable(models: ModelInfo[]): string {
  if (models.length === 0) return 'no models';
  return table([['MODEL', 'LATEST', 'FROM', 'JOB', 'SIZE', 'DOWNLOAD', 'INFERENCE', 'OWNER', 'CREATED'],
    ...models.map((m) => [modelRef(m), m.latest_version === m.version ? 'yes' : '', m.parent ?? '-', m.job_id ?? '-', mib(m.size), yes(m.allow_download), yes(m.allow_remote_inference), m.owner, m.created])]);
}

function datasetTable(datasets: DatasetInfo[]): string {
  if (datasets.length === 0) return 'no datasets';
  return table([['ID', 'FORMAT', 'ROWS', 'SHAPE/COLUMNS', 'TAGS'],
    ...datasets.map((d) => [d.id, d.format, String(d.schema.rows),
      d.schema.columns ? `${d.schema.columns.length} columns${d.schema.label ? ` (label ${d.schema.label})` : ''}` : `${d.schema.dtype} [${d.schema.dims?.join(', ')}]`,
      d.tags.join(',')])]);
}

export function runGrid(argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  return new Cli(out, err).run(argv);
}

if (require.main === module) {
  void runGrid(process.argv).then((code) => { process.exitCode = code; });
}
