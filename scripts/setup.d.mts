// Types for setup.mjs (plain JS so it runs before `npm ci` has built anything).
export declare const CODE_SERVER_VERSION: string;
export interface ToolPaths {
  root: string;
  nodeDir: string;
  nodePrefix: string;
  node: string;
  codeServerDir: string;
  codeServerEntry: string;
  codeServerStamp: string;
  chromium: string;
}
export declare function toolPaths(root?: string): ToolPaths;
export declare function ensureTools(): ToolPaths;
export declare function missingToolPrerequisites(): string | undefined;
