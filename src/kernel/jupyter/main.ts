// `grid-kernel <connection_file>`: the Grid (TypeScript) kernel as Jupyter starts it (the kernelspec
// that `grid kernel install` writes). Bundled to dist/grid-kernel.js next to dist/kernel-worker.js.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { KernelHost, type KernelLogger } from '../host';
import { StandaloneGridBridge } from './grid-bridge';
import { JupyterKernel } from './kernel';
import { readConnectionFile } from './wire';

/** Jupyter collects a kernel's stderr into its log; debug lines only with GRID_KERNEL_DEBUG=1. */
function stderrLogger(debug: boolean): KernelLogger {
  const line = (level: string, message: string, data?: Record<string, unknown>) =>
    process.stderr.write(`[grid-kernel] ${level} ${message}${data ? ` ${JSON.stringify(data)}` : ''}\n`);
  return {
    debug: (m, d) => { if (debug) line('debug', m, d); },
    warn: (m, d) => line('warn', m, d),
    error: (m, d) => line('error', m, d),
  };
}

async function main(argv: string[]): Promise<number> {
  const file = argv.find((a) => !a.startsWith('-'));
  if (!file) {
    process.stderr.write('usage: grid-kernel <connection_file>   (Jupyter passes {connection_file}; install the kernelspec with `grid kernel install`)\n');
    return 2;
  }
  const logger = stderrLogger(process.env.GRID_KERNEL_DEBUG === '1');
  const connection = readConnectionFile(file);
  // Cells resolve relative paths and imports from the notebook's folder: Jupyter starts kernels there.
  const cwd = process.cwd();
  const bridge = new StandaloneGridBridge({ cwd });
  const interruptTimeoutMs = Number(process.env.GRID_KERNEL_INTERRUPT_TIMEOUT_MS) || undefined;
  // The sample notebooks find their models through GRID_SAMPLES, as under VS Code (media/samples beside dist/).
  const samples = process.env.GRID_SAMPLES ?? [join(__dirname, '..', 'media', 'samples')].find((d) => existsSync(d));
  const host = new KernelHost({ cwd, bridge, logger, ...(samples && { env: { GRID_SAMPLES: samples } }), ...(interruptTimeoutMs && { interruptTimeoutMs }) });
  const kernel = await JupyterKernel.start({ connection, host, logger });
  // interrupt_mode is "message": a SIGINT (Ctrl-C in the terminal that started Jupyter) is not ours to die of.
  process.on('SIGINT', () => logger.debug('SIGINT ignored: interrupts arrive as interrupt_request'));
  process.on('SIGTERM', () => void kernel.close());
  logger.debug('kernel started', { pid: process.pid, connection: file, cwd });
  await kernel.closed;
  bridge.dispose();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`[grid-kernel] ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
