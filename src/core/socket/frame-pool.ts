// Buffers for big outgoing message frames (inference inputs over the socket), reused from request to
// request. A fresh 784 KiB buffer per batch-256 request cost its pages' first touch (about as much as
// the copy into it) and frequent garbage collections (perf: V8's helper threads ran ~1/3 of the client's
// CPU in bench/node-inference.ts). A frame goes back only once nothing can read it again: ws has
// written it out and its request has settled (until then a re-send after a reconnect reads it).

/** Frames smaller than this come from Node's own buffer pool, which costs nothing to take. */
export const POOLED_FRAME_BYTES = 64 * 1024;
/** At most this many idle frames, of this many bytes in all, each at most this big: what an idle connection holds stays bounded. */
const MAX_IDLE_FRAMES = 4;
const MAX_IDLE_BYTES = 32 * 1024 * 1024;
const MAX_FRAME_BYTES = 16 * 1024 * 1024;

export class FramePool {
  private readonly idle: Buffer[] = [];
  private idleBytes = 0;

  /** A buffer of at least `bytes` (at most twice that, so a small frame does not pin a big one); undefined for small or huge frames. */
  take(bytes: number): Buffer | undefined {
    if (bytes < POOLED_FRAME_BYTES || bytes > MAX_FRAME_BYTES) return undefined;
    const i = this.idle.findIndex((b) => b.length >= bytes && b.length <= 2 * bytes);
    if (i >= 0) {
      const buf = this.idle.splice(i, 1)[0]!;
      this.idleBytes -= buf.length;
      return buf;
    }
    // Its own ArrayBuffer (never a slice of Node's shared pool), sized with room for a slightly bigger request.
    return Buffer.allocUnsafeSlow(bytes + (bytes >> 4));
  }

  /** Takes back a buffer from take() once nothing reads it; the oldest idle ones go when full. */
  give(buf: Buffer): void {
    while (this.idle.length > 0 && (this.idle.length >= MAX_IDLE_FRAMES || this.idleBytes + buf.length > MAX_IDLE_BYTES)) this.idleBytes -= this.idle.shift()!.length;
    this.idle.push(buf);
    this.idleBytes += buf.length;
  }

  /** Bytes held by idle buffers. */
  get bytesIdle(): number {
    return this.idleBytes;
  }

  /** Drops the idle buffers (the connection closed). */
  clear(): void {
    this.idle.length = 0;
    this.idleBytes = 0;
  }
}
