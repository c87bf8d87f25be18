// Types for deps.mjs (plain JS so it runs before `npm ci` has installed anything).
export declare function staleReason(root?: string): string | undefined;
