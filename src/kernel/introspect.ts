// Completion and inspection from the live kernel state: the globals earlier cells left (they live on
// globalThis, see compile.ts), `grid`, Node's own globals, and the members of whatever object a
// dotted path names. Cheap on purpose: no type checker, and no getter is ever invoked, so asking
// about a value never runs user code.

import { inspect as inspectValue } from 'node:util';
import type { MimeBundle } from './protocol';

const KEYWORDS = [
  'abstract', 'as', 'async', 'await', 'break', 'case', 'catch', 'class', 'const', 'continue', 'debugger',
  'declare', 'default', 'delete', 'do', 'else', 'enum', 'export', 'extends', 'false', 'finally', 'for',
  'function', 'if', 'implements', 'import', 'in', 'instanceof', 'interface', 'keyof', 'let', 'new', 'null',
  'of', 'private', 'protected', 'public', 'readonly', 'return', 'satisfies', 'static', 'super', 'switch',
  'this', 'throw', 'true', 'try', 'type', 'typeof', 'undefined', 'var', 'void', 'while', 'yield',
];

/** Names the kernel itself puts on globalThis; not for users. */
const HIDDEN = /^__/;
const MAX_MATCHES = 500;

const IDENT = '[A-Za-z_$][\\w$]*';
const MEMBER_BEFORE = new RegExp(`(${IDENT}(?:\\s*\\??\\.\\s*${IDENT})*)\\s*\\??\\.\\s*(${IDENT})?$`);
const IDENT_BEFORE = new RegExp(`(${IDENT})$`);
const DECLARED = new RegExp(`\\b(?:const|let|var|function\\*?|class|type|interface|enum)\\s+(${IDENT})`, 'g');

export interface Completion {
  matches: string[];
  start: number;
  end: number;
}

export function complete(code: string, cursor: number, scope: object = globalThis): Completion {
  const before = code.slice(0, cursor);
  const member = MEMBER_BEFORE.exec(before);
  if (member) {
    const prefix = member[2] ?? '';
    const target = resolvePath(member[1]!, scope);
    const names = target.found ? memberNames(target.value) : [];
    return { matches: filter(names, prefix), start: cursor - prefix.length, end: cursor };
  }
  const prefix = IDENT_BEFORE.exec(before)?.[1] ?? '';
  const names = new Set<string>(KEYWORDS);
  for (const m of code.matchAll(DECLARED)) names.add(m[1]!);
  for (const name of memberNames(scope)) names.add(name);
  return { matches: filter([...names], prefix), start: cursor - prefix.length, end: cursor };
}

/** A description of the name (or dotted path) under the cursor, or undefined when nothing is there. */
export function inspect(code: string, cursor: number, scope: object = globalThis): MimeBundle | undefined {
  const path = pathAt(code, cursor);
  if (!path) return undefined;
  const target = resolvePath(path, scope);
  if (!target.found) return undefined;
  const value = target.value;
  const lines = [`${path}: ${typeLabel(value)}`];
  if (typeof value === 'function') lines.push(signature(value));
  else lines.push(inspectValue(value, { depth: 1, maxArrayLength: 20, maxStringLength: 500, breakLength: 100 }));
  return { 'text/plain': lines.join('\n') };
}

/** The dotted path that the cursor is in or just after: `grid.mod|els` → `grid.models`. */
function pathAt(code: string, cursor: number): string | undefined {
  let end = cursor;
  while (end < code.length && /[\w$]/.test(code[end]!)) end++;
  const m = new RegExp(`(${IDENT}(?:\\s*\\??\\.\\s*${IDENT})*)$`).exec(code.slice(0, end));
  return m?.[1];
}

function resolvePath(path: string, scope: object): { found: true; value: unknown } | { found: false } {
  let value: unknown = scope;
  for (const name of path.split(/\s*\??\.\s*/)) {
    if (value === null || value === undefined) return { found: false };
    const own = findDescriptor(Object(value) as object, name);
    // A getter could run anything (and `grid.signal` has one): only plain data is followed.
    if (!own || !('value' in own)) return { found: false };
    value = own.value;
  }
  return { found: true, value };
}

function findDescriptor(obj: object, name: string): PropertyDescriptor | undefined {
  for (let o: object | null = obj; o !== null; o = Object.getPrototypeOf(o) as object | null) {
    const d = Object.getOwnPropertyDescriptor(o, name);
    if (d) return d;
  }
  return undefined;
}

function memberNames(value: unknown): string[] {
  if (value === null || value === undefined) return [];
  const names = new Set<string>();
  for (let o: object | null = Object(value) as object; o !== null && o !== Object.prototype; o = Object.getPrototypeOf(o) as object | null) {
    for (const name of Object.getOwnPropertyNames(o)) if (name !== 'constructor' && !HIDDEN.test(name) && /^[A-Za-z_$][\w$]*$/.test(name)) names.add(name);
  }
  return [...names];
}

function filter(names: string[], prefix: string): string[] {
  return [...new Set(names)].filter((n) => n.startsWith(prefix) && !HIDDEN.test(n)).sort(byCase).slice(0, MAX_MATCHES);
}

/** Lower-case names (variables) before capitalised ones (classes, Node's constructors). */
function byCase(a: string, b: string): number {
  const ua = /^[A-Z]/.test(a), ub = /^[A-Z]/.test(b);
  return ua === ub ? a.localeCompare(b) : ua ? 1 : -1;
}

function typeLabel(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'function') return /^class\b/.test(Function.prototype.toString.call(value)) ? 'class' : 'function';
  if (typeof value !== 'object') return typeof value;
  const name = (Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null)?.constructor?.name;
  return name ?? 'object';
}

/** The declaration line of a function: `async function f(a, b)`, `(x) =>`, or `name(…) [native code]`. */
function signature(fn: Function): string { // eslint-disable-line @typescript-eslint/no-unsafe-function-type -- any callable is described
  const text = Function.prototype.toString.call(fn);
  if (text.includes('[native code]')) return `${fn.name || 'function'}(${fn.length === 0 ? '' : `${fn.length} argument${fn.length > 1 ? 's' : ''}`}) [native code]`;
  const head = /^[^{]*?(=>|\{)/s.exec(text)?.[0] ?? text.split('\n')[0]!;
  return head.replace(/\s*\{$/, '').replace(/\s+/g, ' ').trim();
}
