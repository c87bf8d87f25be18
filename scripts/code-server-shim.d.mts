// Types for code-server-shim.mjs.
export interface ShimArgs {
  extensionDevelopmentPaths: string[];
  extensionTestsPath?: string;
  userDataDir?: string;
  extensionsDir?: string;
  folders: string[];
  disableExtensions: boolean;
  /** Flags with no code-server counterpart, reported and skipped. */
  ignored: string[];
}
export declare function parseShimArgs(argv: string[]): ShimArgs;
