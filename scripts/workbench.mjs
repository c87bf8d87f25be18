// The browser half of the code-server test bed: headless Debian chromium (playwright-core) and the
// workbench URLs it opens. Shared by the e2e harness (test/e2e/harness.ts) and the runTests shim
// (scripts/code-server-shim.mjs), which cannot load TypeScript.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const CHROMIUM_FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage',
];

/** Headless chromium at `executablePath` with its profile, TMPDIR and XDG dirs in `workDir`. */
export async function launchBrowser(workDir, executablePath) {
  for (const d of ['tmp', 'xdg/config', 'xdg/cache']) mkdirSync(join(workDir, d), { recursive: true });
  return chromium.launchPersistentContext(join(workDir, 'chromium-profile'), {
    executablePath,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1400, height: 900 },
    env: { ...process.env, TMPDIR: join(workDir, 'tmp'), XDG_CONFIG_HOME: join(workDir, 'xdg', 'config'), XDG_CACHE_HOME: join(workDir, 'xdg', 'cache') },
  });
}

/** `vscode-remote://` URI of a server-side path, as the workbench at `server` names it. */
export function remoteUri(server, absPath) {
  return `vscode-remote://127.0.0.1:${server.port}${absPath}`;
}

/** The workbench URL opening `folder` (if any), with optional payload entries (extension dev/tests paths). */
export function workbenchUrl(server, folder, payload = []) {
  const q = new URLSearchParams(folder ? { folder } : {});
  if (payload.length) q.set('payload', JSON.stringify(payload));
  return `${server.url}?${q.toString()}`;
}
