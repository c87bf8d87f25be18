// Turns a cell into a script that keeps its state in the kernel's global scope.
//
// esbuild strips the types (fast; no type check), acorn finds the top-level statements of its output,
// and a few in-place edits make the cell behave like a notebook cell rather than a module:
//   const/let/var x = …      →  ;(x = …);          the name lives on globalThis, so a later cell may
//                                                  redeclare it (Jupyter semantics, not a SyntaxError)
//   class A {}               →  ;A = class A {};
//   function f() {}          →  kept (hoisted); the prefix copies it to globalThis
//   import d, { a } from 'm' →  ;{const __m = await __gridKernel.import('m'); d = __m.default; a = __m["a"];}
//   import('m'), import.meta →  __gridKernel.import('m'), __gridKernel.meta   (resolved from the notebook)
//   last expression          →  return (expr)   shown like Jupyter's Out[n]
// and the whole body goes into `(async () => { … })()` so top-level await works. Edits never add or
// remove a line break, so stack positions map back through esbuild's source map alone.

import { transform, type Message } from 'esbuild';
import { parse, type Node, type Pattern, type Program, type VariableDeclaration, type ImportDeclaration } from 'acorn';
import { TraceMap, originalPositionFor, GREATEST_LOWER_BOUND, LEAST_UPPER_BOUND } from '@jridgewell/trace-mapping';
import type { CellLanguage } from './protocol';

/** The global the rewritten cells call into; the worker defines it. */
export const KERNEL_GLOBAL = '__gridKernel';

export interface CellPosition {
  /** 1-based line in the cell. */
  line: number;
  /** 1-based column in the cell. */
  column: number;
}

export interface CompiledCell {
  /** A script whose completion value is a promise of the cell's last expression value. */
  readonly code: string;
  /** Names the cell declares at top level (they become properties of globalThis). */
  readonly declared: readonly string[];
  /** Maps a position in `code` (1-based line and column, as V8 reports them) to the cell's own. */
  originalPosition(line: number, column: number): CellPosition | undefined;
}

/** A cell that does not parse; positions are the cell's own. */
export class CellSyntaxError extends SyntaxError {
  readonly line: number;
  readonly column: number;

  constructor(message: string, cellName: string, line: number, column: number, lineText: string | undefined) {
    super(message);
    this.line = line;
    this.column = column;
    const caret = lineText === undefined ? '' : `\n\n    ${lineText}\n    ${' '.repeat(Math.max(0, column - 1))}^`;
    this.stack = `SyntaxError: ${message}\n    at ${cellName}:${line}:${column}${caret}`;
  }
}

interface Edit {
  start: number;
  end: number;
  text: string;
}

/** A stretch of the input copied unchanged into the output. */
interface Run {
  out: number;
  input: number;
  length: number;
}

export interface RewrittenCell {
  code: string;
  declared: string[];
  /** Offset in `code` → offset in the input JavaScript; undefined inside the wrapper. */
  inputOffset(offset: number): number | undefined;
}

const esbuildTarget = `node${process.versions.node.split('.').slice(0, 2).join('.')}`;

export async function compileCell(source: string, language: CellLanguage, cellName: string): Promise<CompiledCell> {
  let js: string;
  let map: string;
  try {
    const result = await transform(source, {
      loader: language === 'typescript' ? 'ts' : 'js',
      sourcefile: cellName,
      sourcemap: 'external',
      target: esbuildTarget,
      logLevel: 'silent',
      // Keep imports that the cell itself does not use: `import fs from 'fs'` alone in a cell is
      // how a notebook brings `fs` into scope for later cells.
      tsconfigRaw: { compilerOptions: { verbatimModuleSyntax: true } },
    });
    js = result.code;
    map = result.map;
  } catch (err) {
    throw fromEsbuildFailure(err, cellName, source);
  }
  const trace = new TraceMap(map);
  const jsLines = lineStarts(js);
  const toCell = (offset: number): CellPosition | undefined => {
    const { line, column } = positionOf(jsLines, offset);
    for (const bias of [GREATEST_LOWER_BOUND, LEAST_UPPER_BOUND] as const) {
      const p = originalPositionFor(trace, { line, column, bias });
      if (p.line !== null) return { line: p.line, column: p.column + 1 };
    }
    return undefined;
  };
  let rewritten: RewrittenCell;
  try {
    rewritten = rewriteCell(js);
  } catch (err) {
    // esbuild accepted it, so this is rare (a construct acorn reads differently); still point at the cell.
    const pos = (err as { pos?: number }).pos;
    const at = typeof pos === 'number' ? toCell(pos) : undefined;
    const message = (err as Error).message.replace(/ \(\d+:\d+\)$/, '');
    throw new CellSyntaxError(message, cellName, at?.line ?? 1, at?.column ?? 1, at ? source.split('\n')[at.line - 1] : undefined);
  }
  const outLines = lineStarts(rewritten.code);
  return {
    code: rewritten.code,
    declared: rewritten.declared,
    originalPosition(line, column) {
      const start = outLines[line - 1];
      if (start === undefined) return undefined;
      const offset = rewritten.inputOffset(start + column - 1);
      return offset === undefined ? undefined : toCell(offset);
    },
  };
}

function fromEsbuildFailure(err: unknown, cellName: string, source: string): Error {
  const errors = (err as { errors?: Message[] }).errors;
  const first = errors?.[0];
  if (!first) return err instanceof Error ? err : new Error(String(err));
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more)` : '';
  const loc = first.location;
  const line = loc?.line ?? 1;
  return new CellSyntaxError(`${first.text}${more}`, cellName, line, (loc?.column ?? 0) + 1, loc?.lineText ?? source.split('\n')[line - 1]);
}

/** The notebook rewrite of plain JavaScript (esbuild's output); exported for the unit tests. */
export function rewriteCell(js: string): RewrittenCell {
  const program = parse(js, {
    ecmaVersion: 'latest',
    sourceType: 'script',
    allowAwaitOutsideFunction: true,
    allowImportExportEverywhere: true,
    allowHashBang: true,
  }) as Program;
  const edits: Edit[] = [];
  const declared = new Set<string>();
  const functions: string[] = [];
  const body = program.body;

  const declareVariables = (decl: VariableDeclaration) => {
    if (decl.kind !== 'var' && decl.kind !== 'let' && decl.kind !== 'const') return; // `using` stays cell-local
    const first = decl.declarations[0]!;
    edits.push({ start: decl.start, end: first.start, text: ';(' });
    for (const d of decl.declarations) {
      collectNames(d.id, declared);
      // `let x;` in a re-run cell resets x, as it would in a fresh scope; `var x;` keeps it.
      if (!d.init && decl.kind !== 'var') edits.push({ start: d.id.end, end: d.id.end, text: ' = void 0' });
    }
    const semicolon = js[decl.end - 1] === ';';
    edits.push({ start: semicolon ? decl.end - 1 : decl.end, end: semicolon ? decl.end - 1 : decl.end, text: semicolon ? ')' : ');' });
  };

  const declareNode = (node: Node): void => {
    switch (node.type) {
      case 'VariableDeclaration':
        declareVariables(node as VariableDeclaration);
        break;
      case 'FunctionDeclaration': {
        const id = (node as unknown as { id: { name: string } | null }).id;
        if (id) functions.push(id.name);
        break;
      }
      case 'ClassDeclaration': {
        const id = (node as unknown as { id: { name: string } | null }).id;
        if (!id) break;
        declared.add(id.name);
        edits.push({ start: node.start, end: node.start, text: `;${id.name} = ` }, { start: node.end, end: node.end, text: ';' });
        break;
      }
    }
  };

  // import() and import.meta anywhere: the cell is a script, which has neither of its own.
  walk(program, (node) => {
    if (node.type === 'ImportExpression') edits.push({ start: node.start, end: node.start + 'import'.length, text: `${KERNEL_GLOBAL}.import` });
    else if (node.type === 'MetaProperty' && (node as unknown as { meta: { name: string } }).meta.name === 'import') {
      edits.push({ start: node.start, end: node.end, text: `${KERNEL_GLOBAL}.meta` });
    }
  });

  /** `expr;` → `return (expr);` over the statement's range (which includes any parentheses). */
  const returnStatement = (start: number, end: number) => {
    const close = js[end - 1] === ';' ? end - 1 : end;
    edits.push({ start, end: start, text: 'return (' }, { start: close, end: close, text: ')' });
  };

  body.forEach((node, index) => {
    const last = index === body.length - 1;
    switch (node.type) {
      case 'VariableDeclaration':
      case 'FunctionDeclaration':
      case 'ClassDeclaration':
        declareNode(node);
        break;
      case 'ImportDeclaration':
        edits.push({ start: node.start, end: node.end, text: keepLines(importText(node, declared), js, node.start, node.end) });
        break;
      case 'ExportNamedDeclaration':
        if (node.declaration) {
          edits.push({ start: node.start, end: node.declaration.start, text: '' });
          declareNode(node.declaration);
        } else {
          edits.push({ start: node.start, end: node.end, text: keepLines('', js, node.start, node.end) });
        }
        break;
      case 'ExportAllDeclaration':
        edits.push({ start: node.start, end: node.end, text: keepLines('', js, node.start, node.end) });
        break;
      case 'ExportDefaultDeclaration': {
        const decl = node.declaration;
        const named = (decl.type === 'FunctionDeclaration' || decl.type === 'ClassDeclaration') && decl.id;
        if (named) {
          edits.push({ start: node.start, end: decl.start, text: '' });
          declareNode(decl);
        } else if (last && decl.type !== 'FunctionDeclaration' && decl.type !== 'ClassDeclaration') {
          // Parentheses around the expression lie outside its node, so cut at the `default` keyword.
          const keywordEnd = js.indexOf('default', node.start) + 'default'.length;
          edits.push({ start: node.start, end: keywordEnd, text: '' });
          returnStatement(keywordEnd, node.end);
        } else {
          edits.push({ start: node.start, end: decl.start, text: 'void ' });
        }
        break;
      }
      case 'ExpressionStatement':
        if (last) returnStatement(node.start, node.end);
        break;
    }
  });

  const names = [...declared];
  let prefix = '(async () => {';
  if (names.length > 0) prefix += `${KERNEL_GLOBAL}.declare(${JSON.stringify(names)});`;
  for (const f of functions) prefix += `globalThis[${JSON.stringify(f)}] = ${f};`;

  // At one position, insertions go before the replacement that starts there (`return (` + `import(`).
  edits.sort((a, b) => a.start - b.start || Number(a.end > a.start) - Number(b.end > b.start));
  const runs: Run[] = [];
  let out = prefix;
  let pos = 0;
  for (const e of edits) {
    if (e.start > pos) {
      runs.push({ out: out.length, input: pos, length: e.start - pos });
      out += js.slice(pos, e.start);
    }
    out += e.text;
    pos = Math.max(pos, e.end);
  }
  if (pos < js.length) {
    runs.push({ out: out.length, input: pos, length: js.length - pos });
    out += js.slice(pos);
  }
  const bodyEnd = out.length;
  out += '\n})()';

  return {
    code: out,
    declared: [...names, ...functions],
    inputOffset(offset) {
      if (offset < prefix.length || offset >= bodyEnd) return undefined; // the async wrapper
      let lo = 0;
      let hi = runs.length - 1;
      let found: Run | undefined;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if (runs[mid]!.out <= offset) { found = runs[mid]; lo = mid + 1; } else hi = mid - 1;
      }
      if (!found) return 0;
      return found.input + Math.min(offset - found.out, found.length);
    },
  };
}

function importText(node: ImportDeclaration, declared: Set<string>): string {
  const attributes = node.attributes.length === 0
    ? ''
    : `, { with: { ${node.attributes.map((a) => `${JSON.stringify(a.key.type === 'Identifier' ? a.key.name : a.key.value)}: ${JSON.stringify(a.value.value)}`).join(', ')} } }`;
  let text = `;{const __m = await ${KERNEL_GLOBAL}.import(${JSON.stringify(node.source.value)}${attributes});`;
  for (const s of node.specifiers) {
    declared.add(s.local.name);
    if (s.type === 'ImportDefaultSpecifier') text += `${s.local.name} = __m.default;`;
    else if (s.type === 'ImportNamespaceSpecifier') text += `${s.local.name} = __m;`;
    else {
      const imported = s.imported.type === 'Identifier' ? s.imported.name : String(s.imported.value);
      text += `${s.local.name} = __m[${JSON.stringify(imported)}];`;
    }
  }
  return `${text}}`;
}

/** Pads a replacement with the line breaks of the text it replaces, so later lines keep their numbers. */
function keepLines(text: string, js: string, start: number, end: number): string {
  let breaks = 0;
  for (let i = start; i < end; i++) if (js.charCodeAt(i) === 10) breaks++;
  return text + '\n'.repeat(breaks);
}

/** Visits every node below `node` (acorn has no walker of its own; acorn-walk would be one more package). */
function walk(node: Node, visit: (node: Node) => void): void {
  visit(node);
  for (const value of Object.values(node)) {
    if (Array.isArray(value)) {
      for (const child of value) if (child && typeof (child as Node).type === 'string') walk(child as Node, visit);
    } else if (value && typeof (value as Node).type === 'string') {
      walk(value as Node, visit);
    }
  }
}

function collectNames(pattern: Pattern, into: Set<string>): void {
  switch (pattern.type) {
    case 'Identifier':
      into.add(pattern.name);
      break;
    case 'ObjectPattern':
      for (const p of pattern.properties) collectNames(p.type === 'RestElement' ? p.argument : p.value, into);
      break;
    case 'ArrayPattern':
      for (const e of pattern.elements) if (e) collectNames(e, into);
      break;
    case 'AssignmentPattern':
      collectNames(pattern.left, into);
      break;
    case 'RestElement':
      collectNames(pattern.argument, into);
      break;
    default:
      break; // MemberExpression targets only occur in assignments, not declarations
  }
}

function lineStarts(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return starts;
}

/** Offset → 1-based line and 0-based column (the source map's convention). */
function positionOf(starts: number[], offset: number): { line: number; column: number } {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (starts[mid]! <= offset) lo = mid; else hi = mid - 1;
  }
  return { line: lo + 1, column: offset - starts[lo]! };
}
