// Layering: only src/extension may talk to VS Code. Everything below it runs in plain Node
// (the grid node, the notebook kernel process, the CLIs) and is tested without a fake `vscode`.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const noVscode = {
  'no-restricted-imports': ['error', {
    paths: [{ name: 'vscode', message: 'core/compute/node/kernel/federation never import vscode (see DESIGN.md).' }],
  }],
};

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
  { files: ['src/core/**', 'src/compute/**', 'src/node/**', 'src/kernel/**', 'src/federation/**'], rules: noVscode },
  // Product code logs through the injected logger (pino on the node, the LogOutputChannel in VS Code).
  { files: ['src/core/**', 'src/compute/**', 'src/node/**', 'src/extension/**', 'src/federation/**'], rules: { 'no-console': 'error' } },
);
