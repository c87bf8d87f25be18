// Stack traces in the cells' own coordinates. V8 hands Error.prepareStackTrace the call sites; frames
// in a cell script are renamed to the cell (`at f (Cell [2]:3:9)`) and mapped back through the cell's
// compilation, and the worker's own frames below the outermost cell frame are dropped. Installed in
// the kernel process only, where every stack a user sees (thrown, logged or caught) comes from cells.

import { inspect } from 'node:util';
import type { CellPosition, CompiledCell } from './compile';
import type { CellError } from './protocol';

interface CellScript {
  cellName: string;
  compiled: CompiledCell;
}

interface MappedFrame extends CellPosition {
  fileName: string;
}

/** Remembers the compiled cells by script file name; old ones go first past `limit`. */
export class CellRegistry {
  private readonly scripts = new Map<string, CellScript>();
  private readonly limit: number;

  constructor(limit = 2000) {
    this.limit = limit;
  }

  register(fileName: string, cellName: string, compiled: CompiledCell): void {
    this.scripts.set(fileName, { cellName, compiled });
    if (this.scripts.size > this.limit) {
      const oldest = this.scripts.keys().next().value;
      if (oldest !== undefined) this.scripts.delete(oldest);
    }
  }

  lookup(fileName: string | null | undefined): CellScript | undefined {
    return fileName ? this.scripts.get(fileName) : undefined;
  }
}

/** Cell frames of each formatted error, top first, for CellError.line. */
const cellFrames = new WeakMap<object, MappedFrame[]>();

export function installStackMapping(registry: CellRegistry): void {
  Error.stackTraceLimit = Math.max(Error.stackTraceLimit, 30);
  Error.prepareStackTrace = (error: Error, sites: NodeJS.CallSite[]) => {
    try {
      return formatStack(error, sites, registry);
    } catch {
      return `${safeHeader(error)}\n${sites.map((s) => `    at ${String(s)}`).join('\n')}`;
    }
  };
}

function formatStack(error: Error, sites: NodeJS.CallSite[], registry: CellRegistry): string {
  const lines: string[] = [];
  const mapped: MappedFrame[] = [];
  let lastCellLine = -1;
  for (const site of sites) {
    let text = String(site);
    const fileName = site.getFileName();
    const cell = registry.lookup(fileName);
    if (cell && fileName) {
      const line = site.getLineNumber() ?? 0;
      const column = site.getColumnNumber() ?? 0;
      const at = cell.compiled.originalPosition(line, column);
      if (!at) continue; // the wrapper around the cell's code, not a line the user wrote
      text = text.replace(`${fileName}:${line}:${column}`, `${cell.cellName}:${at.line}:${at.column}`);
      mapped.push({ fileName, ...at });
      lastCellLine = lines.length;
    }
    lines.push(`    at ${text}`);
  }
  if (typeof error === 'object' && error !== null) cellFrames.set(error, mapped);
  const kept = lastCellLine >= 0 ? lines.slice(0, lastCellLine + 1) : lines;
  return [safeHeader(error), ...kept].join('\n');
}

function safeHeader(error: unknown): string {
  try {
    const e = error as { name?: unknown; message?: unknown; code?: unknown };
    const name = typeof e.name === 'string' ? e.name : 'Error';
    const message = e.message === undefined ? '' : String(e.message);
    const label = typeof e.code === 'string' ? `${name} [${e.code}]` : name;
    return message ? `${label}: ${message}` : label;
  } catch {
    return 'Error';
  }
}

/** Gives `to` the cell frames of `from`, whose (already formatted) stack it took over. */
export function adoptCellFrames(from: object, to: object): void {
  const frames = cellFrames.get(from);
  if (frames) cellFrames.set(to, frames);
}

/** What a notebook shows for anything a cell threw. `fileName` is the failing cell's script. */
export function toCellError(thrown: unknown, fileName?: string): CellError {
  if (typeof thrown === 'object' && thrown !== null && 'message' in thrown) {
    const e = thrown as { name?: unknown; message?: unknown; stack?: unknown; code?: unknown; line?: unknown; column?: unknown };
    const name = typeof e.name === 'string' ? e.name : 'Error';
    const message = String(e.message);
    const stack = typeof e.stack === 'string' ? e.stack : `${name}: ${message}`;
    const result: CellError = { name, message, stack };
    if (typeof e.code === 'string') result.code = e.code;
    const frames = cellFrames.get(thrown);
    // The failing cell's own frame; for errors outside a cell run (timers), the innermost cell frame.
    const frame = fileName === undefined ? frames?.[0] : frames?.find((f) => f.fileName === fileName);
    if (frame) {
      result.line = frame.line;
      result.column = frame.column;
    } else if (typeof e.line === 'number' && typeof e.column === 'number') {
      result.line = e.line; // CellSyntaxError carries its own position
      result.column = e.column;
    }
    return result;
  }
  const shown = inspect(thrown);
  return { name: 'Uncaught', message: shown, stack: `Uncaught ${shown}` };
}
