// One sink for everything the in-host suites print: the file the runner reads back (GRID_E2E_REPORT),
// because the remote extension host's console does not reach the runner.
import { appendFileSync } from 'node:fs';
import { format } from 'node:util';

export function report(...args: unknown[]): void {
  const line = `${format(...args)}\n`;
  const file = process.env.GRID_E2E_REPORT;
  if (file) appendFileSync(file, line);
  else process.stdout.write(line);
}
