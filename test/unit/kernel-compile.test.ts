// The cell rewrite on its own: compiled cells run in a fresh vm context here (the kernel process
// runs them in its main context the same way), so state, redeclaration and positions are checked
// without a child process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as vm from 'node:vm';
import { CellSyntaxError, compileCell, KERNEL_GLOBAL } from '../../src/kernel/compile';

function notebook() {
  const context = vm.createContext({ setImmediate });
  vm.runInContext(`globalThis.${KERNEL_GLOBAL} = { declare(names) { for (const n of names) if (!(n in globalThis)) globalThis[n] = undefined; } };`, context);
  let n = 0;
  return {
    context,
    async run(source: string, language: 'typescript' | 'javascript' = 'typescript'): Promise<unknown> {
      const compiled = await compileCell(source, language, `Cell [${++n}]`);
      // structuredClone brings arrays and objects out of the context's realm for deepEqual
      return structuredClone(await vm.runInContext(compiled.code, context, { filename: `cell-${n}.js` }));
    },
  };
}

test('declarations of every kind persist into the next cell', async () => {
  const nb = notebook();
  await nb.run([
    'const a: number = 1, { b, c: [d] } = { b: 2, c: [3] };',
    'let e: string;',
    'var f = 4;',
    'class G { value() { return a + b; } }',
    'function h(x: number): number { return x * 10; }',
    'enum Color { Red, Green }',
    'export const i = 5;',
  ].join('\n'));
  assert.deepEqual(await nb.run('[a, b, d, e, f, new G().value(), h(2), Color.Green, i]'), [1, 2, 3, undefined, 4, 3, 20, 1, 5]);
});

test('a later cell may redeclare const, and let without a value resets while var keeps', async () => {
  const nb = notebook();
  await nb.run('const x = 1; let y = 2; var z = 3;');
  await nb.run('const x = "again"; let y; var z;');
  assert.deepEqual(await nb.run('[x, y, z]'), ['again', undefined, 3]);
});

test('functions are hoisted inside their cell and visible after it', async () => {
  const nb = notebook();
  assert.equal(await nb.run('twice(4)\nfunction twice(n: number) { return 2 * n; }\n'), undefined, 'last statement is a declaration: no value');
  assert.equal(await nb.run('twice(4)'), 8);
  assert.equal(await nb.run('const early = twice(1);\nfunction twice(n: number) { return 3 * n; }\nearly'), 3);
});

test('the last expression is the value, parenthesised or awaited; a declaration or statement has none', async () => {
  const nb = notebook();
  assert.deepEqual(await nb.run('({ a: 1 })'), { a: 1 });
  assert.equal(await nb.run('1 + 1;'), 2);
  assert.equal(await nb.run('await new Promise<number>((r) => setImmediate(() => r(42)))'), 42);
  assert.equal(await nb.run('const v = 1'), undefined);
  assert.equal(await nb.run('if (v) { 5 }'), undefined);
  assert.equal(await nb.run('export default v + 1'), 2);
  assert.equal(await nb.run('// only a comment'), undefined);
});

test('a syntax error reports the cell line and column, with the line shown', async () => {
  await assert.rejects(compileCell('const a = 1;\n\nconst b: number = ;\n', 'typescript', 'Cell [7]'), (err: unknown) => {
    assert.ok(err instanceof CellSyntaxError);
    assert.equal(err.line, 3);
    assert.equal(err.column, 19);
    assert.match(err.stack!, /^SyntaxError: Unexpected ";"\n {4}at Cell \[7\]:3:19\n\n {4}const b: number = ;\n {22}\^/);
    return true;
  });
});

test('runtime positions map back to the cell even where types and interfaces were stripped', async () => {
  const source = [
    'interface Sample {',
    '  x: number;',
    '  y: number;',
    '}',
    'type Pair = [number, number];',
    'const s: Sample = { x: 1, y: 2 };',
    'function check(p: Pair): void {',
    '  if (p[0] > 0) throw new Error("bad pair");',
    '}',
    'check([s.x, s.y] as Pair);',
  ].join('\n');
  const compiled = await compileCell(source, 'typescript', 'Cell [1]');
  const context = vm.createContext({});
  vm.runInContext(`globalThis.${KERNEL_GLOBAL} = { declare() {} };`, context);
  const err = await (vm.runInContext(compiled.code, context, { filename: 'cell.js' }) as Promise<unknown>).then(() => assert.fail('expected a throw'), (e: Error) => e);
  const frames = [...err.stack!.matchAll(/cell\.js:(\d+):(\d+)/g)].map((m) => compiled.originalPosition(Number(m[1]), Number(m[2])));
  assert.deepEqual(frames[0], { line: 8, column: 23 }, 'the throw, in check()');
  assert.deepEqual(frames[1], { line: 10, column: 1 }, 'the call at the top level of the cell');
});

test('JavaScript cells take the same path', async () => {
  const nb = notebook();
  await nb.run('let total = 0;\nfor (const n of [1, 2, 3]) total += n;', 'javascript');
  assert.equal(await nb.run('total', 'javascript'), 6);
});
