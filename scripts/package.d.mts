// Types for package.mjs (used by the VSIX test and `npm run start`).
export declare const TARGETS: string[];
export declare function ignoreFileFor(target: string): string;
export declare function zeromqLines(target: string): string[];
export declare function packageExtension(opts?: { target?: string; out?: string; build?: boolean }): { vsix: string; bytes: number };
