// Starting our own servers as real child processes and waiting for the line they print when ready.

import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { nodeProcessEnv } from './postgres';
import './check-replies';

export interface Started {
  readonly child: ChildProcess;
  readonly url: string;
  readonly port: number;
  /** Everything the process wrote to stderr so far (for failure messages). */
  stderr(): string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** A grid node's entry (src/node/main.ts, dist/grid-node.js, a fixture wrapping it), not another server. */
const GRID_NODE_SCRIPT = /(?:grid-node[^/\\]*|node[/\\]main)\.[jt]s$/;

/**
 * Spawns `node [--import tsx] <script> ...args` and resolves on its `listening on ws://HOST:PORT` (or wss://) line.
 * A grid node gets its test database (GRID_TEST_DATABASE=postgres, test/helpers/postgres.ts).
 */
export async function startNodeScript(script: string, args: string[], env: NodeJS.ProcessEnv = process.env, execArgv: string[] = []): Promise<Started> {
  if (GRID_NODE_SCRIPT.test(script)) env = await nodeProcessEnv(args, env);
  // Bundled scripts (benchmarks) run as they ship; sources run through tsx.
  const node = [...execArgv, ...(script.endsWith('.js') ? [script] : ['--import', 'tsx', script])];
  const child = spawn(process.execPath, [...node, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (d: string) => { err += d; });
  const lines = createInterface({ input: child.stdout! });
  const url = await new Promise<string>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`${script} exited with ${code} before listening:\n${err}`));
    child.once('exit', onExit);
    lines.on('line', (line) => {
      const m = /^listening on (wss?:\/\/\S+)$/.exec(line);
      if (m) { child.off('exit', onExit); resolve(m[1]!); }
    });
  });
  return {
    child,
    url,
    port: Number(new URL(url).port),
    stderr: () => err,
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, 'exit');
      child.kill(signal);
      await exited;
    },
  };
}

export interface CliRun { code: number | null; out: string; err: string }

/** Runs the `grid` CLI from source (src/cli/grid.ts) with `env` over this process's environment; its exit code and output. */
export function gridCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve) => {
    const cli = join(__dirname, '..', '..', 'src', 'cli', 'grid.ts');
    const p = spawn(process.execPath, ['--import', 'tsx', cli, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout!.on('data', (d: Buffer) => { out += d; });
    p.stderr!.on('data', (d: Buffer) => { err += d; });
    p.once('exit', (code) => resolve({ code, out, err }));
  });
}
