// Types for code-server.mjs (shared by the e2e tests and `npm run start`).
import type { ChildProcessByStdio, SpawnOptions } from 'node:child_process';
import type { Readable } from 'node:stream';
import type { ToolPaths } from './setup.mjs';

export interface GroupProcess {
  child: ChildProcessByStdio<null, Readable, Readable>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop(graceMs?: number): Promise<void>;
}
export declare function shuttingDown(): boolean;
export declare function spawnGroup(cmd: string, args: string[], opts?: SpawnOptions): GroupProcess;
export declare function waitForLine(
  proc: GroupProcess,
  pattern: RegExp,
  opts?: { timeoutMs?: number; what?: string; onLine?: (line: string) => void },
): Promise<string>;
export declare function isolatedEnv(workDir: string, extra?: Record<string, string>): NodeJS.ProcessEnv;

export interface CodeServerOptions {
  workDir: string;
  folder?: string;
  smokeTestDriver?: boolean;
  host?: string;
  port?: number;
  userDataDir?: string;
  extensionsDir?: string;
  env?: Record<string, string>;
  settings?: Record<string, unknown>;
  /** More VS Code server flags, passed through code-server's --vscode-option (flag or flag=value). */
  vscodeOptions?: string[];
  onLine?: (line: string) => void;
}
export interface CodeServer {
  url: string;
  port: number;
  stop(graceMs?: number): Promise<void>;
  proc: GroupProcess;
}
export declare function startCodeServer(tools: ToolPaths, opts: CodeServerOptions): Promise<CodeServer>;
export declare function installExtension(
  tools: ToolPaths,
  opts: { workDir: string; extensionsDir: string; userDataDir?: string; vsix: string },
): Promise<string>;
