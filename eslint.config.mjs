// Layering (DESIGN.md, README "Layout"): each folder of src may import only the folders below it.
//   core ← compute ← {federation, node, cli, kernel} ← extension
// node, cli and kernel do not import each other (the extension starts the node as a process, the
// kernel as a child process); cli and kernel may use federation (the CLI's `grid fedavg` and a
// notebook's grid.fedavg, whichever front end runs it, are the same FedAvg). Only src/extension may talk to VS Code:
// everything below it runs in plain Node and is tested without a fake `vscode`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** What each folder of src may import, besides itself and packages. */
const LAYERS = {
  core: [],
  compute: ['core'],
  federation: ['core', 'compute'],
  node: ['core', 'compute'],
  cli: ['core', 'compute', 'federation'],
  kernel: ['core', 'compute', 'federation'],
  extension: ['core', 'compute', 'federation', 'kernel'],
};

const PICTURE = 'layers point down: core ← compute ← {federation, node, cli, kernel} ← extension (README.md, "Layout")';

/** no-restricted-imports (imports, type imports, re-exports) and no-restricted-syntax (import()) for one folder. */
function layerRules(layer) {
  const banned = Object.keys(LAYERS).filter((l) => l !== layer && !LAYERS[layer].includes(l));
  const may = LAYERS[layer].length ? `only ${LAYERS[layer].join(', ')}` : 'no other folder of src';
  // A relative path that climbs out of this folder into a banned one: '../node/server', '../../kernel'.
  const climbsTo = (l) => `^(\\.\\./)+${l}(/|$)`;
  const message = (l) => `src/${layer} may not import src/${l}; it may import ${may}: ${PICTURE}.`;
  const vscode = layer === 'extension' ? [] : [{ name: 'vscode', message: 'only src/extension imports vscode: everything below it runs in plain Node.' }];
  return {
    'no-restricted-imports': ['error', { paths: vscode, patterns: banned.map((l) => ({ regex: climbsTo(l), message: message(l) })) }],
    'no-restricted-syntax': ['error', ...banned.map((l) => ({ selector: `ImportExpression[source.value=/${climbsTo(l).replaceAll('/', '\\/')}/]`, message: message(l) }))],
  };
}

export default tseslint.config(
  { ignores: ['dist/**', 'out/**', 'node_modules/**', '.tools/**', '.test-work/**', '.start/**', 'media/**/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { console: 'readonly', process: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', queueMicrotask: 'readonly', URL: 'readonly', AbortController: 'readonly', AbortSignal: 'readonly', TextEncoder: 'readonly', TextDecoder: 'readonly', structuredClone: 'readonly', performance: 'readonly', __dirname: 'readonly', require: 'readonly', module: 'writable', globalThis: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
    },
  },
  ...Object.keys(LAYERS).map((layer) => ({ files: [`src/${layer}/**`], rules: layerRules(layer) })),
  // Product code logs through the injected logger (pino on the node, the LogOutputChannel in VS Code).
  { files: ['src/core/**', 'src/compute/**', 'src/node/**', 'src/extension/**', 'src/federation/**'], rules: { 'no-console': 'error' } },
);
