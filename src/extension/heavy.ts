// Loads the heavy half (lazy.ts) on first use. Bundled, it is dist/extension-lazy.js next to this
// bundle; the path is computed so esbuild leaves it out of the activation bundle.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type * as Lazy from './lazy';

let loaded: typeof Lazy | undefined;

export function heavy(): typeof Lazy {
  if (!loaded) {
    const bundled = path.join(__dirname, 'extension-lazy.js');
    // Unbundled (tsx), this file sits next to lazy.ts.
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a computed path keeps the heavy half out of the activation bundle
    loaded = require(fs.existsSync(bundled) ? bundled : path.join(__dirname, 'lazy')) as typeof Lazy;
  }
  return loaded;
}
