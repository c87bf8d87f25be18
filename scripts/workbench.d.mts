// Types for workbench.mjs.
import type { BrowserContext } from 'playwright-core';

export declare function launchBrowser(workDir: string, executablePath: string): Promise<BrowserContext>;
export declare function remoteUri(server: { port: number }, absPath: string): string;
export declare function workbenchUrl(server: { url: string }, folder: string | undefined, payload?: [string, string][]): string;
