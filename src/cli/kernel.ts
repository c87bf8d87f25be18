// grid kernel install / uninstall: the `grid-typescript` kernelspec that lets Jupyter (JupyterLab,
// Notebook, nbconvert, nbclient, papermill, vscode-jupyter) start the Grid (TypeScript) kernel. Files
// are written where Jupyter looks (its data-path rules), so neither Python nor jupyter is needed here.

import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import type { Command } from 'commander';
import { gridError } from '../core/errors';

export const KERNEL_NAME = 'grid-typescript';

export interface KernelCliHost {
  print(human: string, json: unknown): void;
}

interface LocationFlags {
  user?: boolean;
  sysPrefix?: boolean;
  prefix?: string;
}

/**
 * The kernelspec. interrupt_mode "message": the kernel process never runs cell code itself (a child
 * process does), so it always reads its control socket, and an interrupt_request works the same on
 * every OS; a signal would also reach the cell process through the process group and kill it.
 */
export function kernelSpec(kernelScript: string, nodePath: string = process.execPath): Record<string, unknown> {
  return {
    argv: [nodePath, kernelScript, '{connection_file}'],
    display_name: 'Grid (TypeScript)',
    language: 'typescript',
    interrupt_mode: 'message',
    env: {},
    metadata: { debugger: false },
  };
}

/** Jupyter's per-user data dir: JUPYTER_DATA_DIR, else the platform's (jupyter_core.paths.jupyter_data_dir). */
export function jupyterUserDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.JUPYTER_DATA_DIR) return path.resolve(env.JUPYTER_DATA_DIR);
  const home = env.HOME ?? os.homedir();
  if (process.platform === 'darwin') return path.join(home, 'Library', 'Jupyter');
  if (process.platform === 'win32') return path.join(env.APPDATA ?? path.join(home, 'AppData', 'Roaming'), 'jupyter');
  return path.join(env.XDG_DATA_HOME || path.join(home, '.local', 'share'), 'jupyter');
}

/** The Python environment Jupyter runs in: an active conda or virtualenv, else python3's sys.prefix. */
function sysPrefix(env: NodeJS.ProcessEnv): string {
  const active = env.CONDA_PREFIX ?? env.VIRTUAL_ENV;
  if (active) return active;
  const r = spawnSync(process.platform === 'win32' ? 'python' : 'python3', ['-c', 'import sys; print(sys.prefix)'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.trim()) throw gridError('NOT_FOUND', '--sys-prefix needs the Python that runs Jupyter: activate its environment, or use --user or --prefix DIR');
  return r.stdout.trim();
}

export function kernelsDir(flags: LocationFlags, env: NodeJS.ProcessEnv = process.env): string {
  const chosen = [flags.user, flags.sysPrefix, flags.prefix !== undefined].filter(Boolean).length;
  if (chosen > 1) throw gridError('INVALID_INPUT', 'choose one of --user, --sys-prefix and --prefix DIR');
  if (flags.prefix !== undefined) return path.join(path.resolve(flags.prefix), 'share', 'jupyter', 'kernels');
  if (flags.sysPrefix) return path.join(sysPrefix(env), 'share', 'jupyter', 'kernels');
  return path.join(jupyterUserDataDir(env), 'kernels');
}

/** dist/grid-kernel.js beside this CLI's bundle, or the repository's build when run from source. */
function builtFile(name: string): string | undefined {
  return [path.join(__dirname, name), path.join(__dirname, '..', '..', 'dist', name)].find((p) => fs.existsSync(p));
}

function mediaFile(name: string): string | undefined {
  return [path.join(__dirname, '..', 'media', name), path.join(__dirname, '..', '..', 'media', name)].find((p) => fs.existsSync(p));
}

export function installKernel(flags: LocationFlags, env: NodeJS.ProcessEnv = process.env): { dir: string; spec: Record<string, unknown> } {
  const script = builtFile('grid-kernel.js');
  if (!script) throw gridError('NOT_FOUND', 'the kernel is not built: run `npm run build` (it writes dist/grid-kernel.js)');
  const dir = path.join(kernelsDir(flags, env), KERNEL_NAME);
  fs.mkdirSync(dir, { recursive: true });
  const spec = kernelSpec(path.resolve(script));
  fs.writeFileSync(path.join(dir, 'kernel.json'), `${JSON.stringify(spec, null, 2)}\n`);
  const logo = mediaFile('grid.svg');
  if (logo) fs.copyFileSync(logo, path.join(dir, 'logo-svg.svg'));
  return { dir, spec };
}

export function uninstallKernel(flags: LocationFlags, env: NodeJS.ProcessEnv = process.env): string {
  const dir = path.join(kernelsDir(flags, env), KERNEL_NAME);
  if (!fs.existsSync(path.join(dir, 'kernel.json'))) throw gridError('NOT_FOUND', `no ${KERNEL_NAME} kernelspec in ${path.dirname(dir)}`);
  fs.rmSync(dir, { recursive: true, force: true });
  return dir;
}

export function registerKernelCommands(program: Command, host: KernelCliHost): void {
  const kernel = program.command('kernel').description('the Grid (TypeScript) Jupyter kernel: install or remove its kernelspec');
  const where = (c: Command) => c
    .option('--user', 'for this user (the default): the Jupyter data dir, JUPYTER_DATA_DIR or ~/.local/share/jupyter')
    .option('--sys-prefix', "in the active Python environment's prefix (conda, virtualenv, or python3's)")
    .option('--prefix <dir>', 'under DIR/share/jupyter/kernels (add DIR/share/jupyter to JUPYTER_PATH to use it)');
  where(kernel.command('install').description(`write the ${KERNEL_NAME} kernelspec ("Grid (TypeScript)") pointing at this build's kernel`))
    .action((flags: LocationFlags) => {
      const { dir, spec } = installKernel(flags);
      host.print(`installed kernelspec ${KERNEL_NAME} in ${dir}`, { name: KERNEL_NAME, dir, spec });
    });
  where(kernel.command('uninstall').description(`remove the ${KERNEL_NAME} kernelspec`))
    .action((flags: LocationFlags) => {
      const dir = uninstallKernel(flags);
      host.print(`removed kernelspec ${KERNEL_NAME} from ${dir}`, { name: KERNEL_NAME, dir });
    });
}
