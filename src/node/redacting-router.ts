// The node's router: every handler's error reaches the client without server paths (node/rpc/redact.ts);
// the node logs the original, path included, so an operator can still find the file.

import { toGridError } from '../core/errors';
import type { Logger } from '../core/logger';
import type { RequestDef, StreamDef } from '../core/protocol/catalogue';
import { FlAuthenticate, FlCycleRequest, FlDownloadCheckpoint, FlListProcesses, FlReport } from '../core/protocol/fl-messages';
import { redactError } from './rpc/redact';
import { GridRouter, type HandlerContext, type StreamContext, type WithAttachment } from './rpc/server';

/**
 * Handlers that read nothing the cache check keeps fresh. A subscription is in place as soon as its frame
 * is dispatched, as on the embedded store: behind the check (a round trip on a shared database) an
 * event emitted meanwhile was lost, though a request sent after the subscribe had already been answered.
 * The model-centric FL messages read the FL tables only, never the model cache (host-training, which may
 * take a hosted model, keeps the check): a round trip before every worker's report was all it cost.
 */
const UNCACHED: ReadonlySet<string> = new Set(['subscribe', FlAuthenticate.type, FlCycleRequest.type, FlReport.type, FlListProcesses.type, FlDownloadCheckpoint.type]);

export class RedactingRouter extends GridRouter {
  private readonly roots: readonly string[];
  private readonly log: Logger;
  private readonly before: (() => Promise<void> | undefined) | undefined;

  /**
   * `roots`: directories whose paths are redacted even when they hold spaces (the data dir). `before`:
   * runs before every handler (a replica's cache check); undefined from it keeps the answer synchronous.
   */
  constructor(roots: readonly string[], log: Logger, before?: () => Promise<void> | undefined) {
    super();
    this.roots = roots;
    this.log = log;
    this.before = before;
  }

  override handle<Req, Rep>(def: RequestDef<Req, Rep>, handler: (data: Req, ctx: HandlerContext) => Promise<Rep | WithAttachment<Rep>> | Rep | WithAttachment<Rep>): this {
    return super.handle(def, this.guard(def.type, handler));
  }

  override stream<Req, Ev, End>(def: StreamDef<Req, Ev, End>, handler: (data: Req, ctx: StreamContext<Ev>) => Promise<End>): this {
    return super.stream(def, this.guard(def.type, handler));
  }

  /** Errors reach the client redacted: the server hands every failing handler's error here (GridRouter.failure). */
  override failure(type: string, err: unknown): unknown {
    return this.redact(type, err);
  }

  /**
   * The handler behind the cache check (`before`); a synchronous answer stays synchronous (the server's fast
   * path for metadata reads). Made once per handler: a request costs no closure of its own.
   */
  private guard<D, C, T>(type: string, handler: (data: D, ctx: C) => T): (data: D, ctx: C) => T {
    if (this.before === undefined || UNCACHED.has(type)) return handler;
    const before = this.before;
    return (data, ctx) => {
      const ready = before();
      return ready === undefined ? handler(data, ctx) : ready.then(() => handler(data, ctx)) as T;
    };
  }

  private redact(type: string, err: unknown): unknown {
    const original = toGridError(err);
    const clean = redactError(original, this.roots);
    if (clean === original) return err;
    this.log.warn({ type, code: clean.code, err: original.message }, 'a server path was removed from an error sent to a client');
    return clean;
  }
}
