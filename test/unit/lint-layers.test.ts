// The layer picture is enforced by lint (eslint.config.mjs): this runs ESLint with the repo's config over
// in-memory files placed in each folder of src and checks that every import README's Layout table does
// not allow is an error naming both folders, and that every import it allows is not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';

const root = join(__dirname, '../..');

/** The picture as README.md's "Layout" table draws it (folder → what it may import), so lint and docs agree. */
function pictureFromReadme(): Record<string, string[]> {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## Layout (`src/`)'));
  const picture: Record<string, string[]> = {};
  for (const row of section.slice(0, section.indexOf('\n\n', section.indexOf('|'))).split('\n')) {
    const cells = row.split('|').map((c) => c.trim());
    const folder = /^`(\w+)\/`$/.exec(cells[1] ?? '')?.[1];
    if (folder) picture[folder] = [...cells[3]!.matchAll(/`(\w+)`/g)].map((m) => m[1]!).filter((f) => f !== 'src');
  }
  return picture;
}
const MAY_IMPORT = pictureFromReadme();
const FOLDERS = Object.keys(MAY_IMPORT);

test('README\'s Layout table names the seven folders of src, core importing nothing', () => {
  assert.deepEqual([...FOLDERS].sort(), ['cli', 'compute', 'core', 'extension', 'federation', 'kernel', 'node']);
  assert.deepEqual(MAY_IMPORT.core, []);
  assert.deepEqual(MAY_IMPORT.cli, ['core', 'compute', 'federation']);
});

const eslint = new ESLint({ cwd: root });

/** The layer rules' messages for `code` as if it were the file `file` (relative to the repo). */
async function layerErrors(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: join(root, file) });
  return result!.messages
    .filter((m) => m.ruleId === 'no-restricted-imports' || m.ruleId === 'no-restricted-syntax' || m.fatal)
    .map((m) => `${m.ruleId ?? 'fatal'}: ${m.message}`);
}

for (const from of FOLDERS) {
  test(`src/${from} may import ${MAY_IMPORT[from]!.join(', ') || 'no other folder'}; anything else is a lint error`, async () => {
    for (const to of FOLDERS.filter((f) => f !== from)) {
      const allowed = MAY_IMPORT[from]!.includes(to);
      // A static import from the folder's top, a type-only import and a re-export from deeper down, a dynamic import.
      const cases: [string, string][] = [
        [`src/${from}/layer-probe.ts`, `import { probe } from '../${to}/probe';\nexport const p = probe;\n`],
        [`src/${from}/sub/layer-probe.ts`, `import type { Probe } from '../../${to}/probe';\nexport type P = Probe;\n`],
        [`src/${from}/sub/layer-probe.ts`, `export * from '../../${to}';\n`],
        [`src/${from}/layer-probe.ts`, `export const load = () => import('../${to}/probe');\n`],
      ];
      for (const [file, code] of cases) {
        const errors = await layerErrors(file, code);
        if (allowed) {
          assert.deepEqual(errors, [], `${file}: ${code.trim()} is allowed`);
        } else {
          assert.equal(errors.length, 1, `${file}: ${code.trim()} must be refused, got ${JSON.stringify(errors)}`);
          assert.match(errors[0]!, new RegExp(`src/${from} may not import src/${to}\\b`), `${file}: ${code.trim()}`);
        }
      }
    }
  });
}

test('imports inside a folder, and of packages, are not layer errors', async () => {
  assert.deepEqual(await layerErrors('src/node/rpc/layer-probe.ts', "import { x } from '../handlers';\nimport * as fs from 'node:fs';\nexport const p = [x, fs];\n"), []);
  assert.deepEqual(await layerErrors('src/compute/layer-probe.ts', "import { x } from './onnx/model';\nimport * as ort from 'onnxruntime-node';\nexport const p = [x, ort];\n"), []);
});

test('only src/extension imports vscode', async () => {
  for (const from of FOLDERS) {
    const errors = await layerErrors(`src/${from}/layer-probe.ts`, "import * as vscode from 'vscode';\nexport const v = vscode;\n");
    if (from === 'extension') assert.deepEqual(errors, []);
    else assert.match(errors.join('\n'), /only src\/extension imports vscode/, `src/${from}`);
  }
});
