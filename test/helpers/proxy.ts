// A TCP proxy between a client and a node, so a test can cut the network mid-transfer the way a
// dropped Wi-Fi link would, or alter the bytes on their way, while both ends keep running.

import net from 'node:net';
import { Transform } from 'node:stream';

export interface CuttableProxy {
  readonly port: number;
  /** Destroys every connection through the proxy; new connections are accepted again. */
  cut(): void;
  close(): Promise<void>;
}

export interface ProxyOptions {
  /** Rewrites the bytes going from the node to the client (same length), e.g. `corruptingLink().fromNode`. */
  fromNode?(chunk: Buffer): Buffer;
}

/** `fromAddress` makes the node see the proxy's connections come from that local address (e.g. 127.0.0.2). */
export async function startProxy(targetPort: number, host = '127.0.0.1', fromAddress?: string, opts: ProxyOptions = {}): Promise<CuttableProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ port: targetPort, host, ...(fromAddress !== undefined && { localAddress: fromAddress }) });
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    const { fromNode } = opts;
    if (fromNode === undefined) upstream.pipe(client);
    else upstream.pipe(new Transform({ transform: (chunk: Buffer, _enc, done) => done(null, fromNode(chunk)) })).pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    cut() {
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

export interface CorruptingLink {
  /** The node → client filter to give `startProxy` as `fromNode`. */
  fromNode(chunk: Buffer): Buffer;
  /** Whether a byte was flipped yet. */
  readonly flipped: boolean;
}

/**
 * A link that flips one byte, once: the last payload byte of the first binary WebSocket frame of at
 * least `minBytes` from the node (a download chunk, whose body ends its frame), the way a faulty link
 * or disk would. The WebSocket framing stays intact: it skips the HTTP upgrade answer, then walks the
 * frame headers across TCP segments (frames from a server are not masked).
 */
export function corruptingLink(minBytes = 64 * 1024): CorruptingLink {
  let inHttp = true;
  let httpTail = '';
  let head: number[] = [];
  let payloadLeft = 0;
  /** Offset of the byte to flip within the rest of the current payload; -1: none. */
  let flipAt = -1;
  let flipped = false;
  return {
    get flipped() {
      return flipped;
    },
    fromNode(chunk) {
      let i = 0;
      if (inHttp) {
        const text = httpTail + chunk.toString('latin1');
        const end = text.indexOf('\r\n\r\n');
        if (end < 0) { httpTail = text.slice(-3); return chunk; }
        inHttp = false;
        i = end + 4 - httpTail.length;
      }
      while (i < chunk.length) {
        if (payloadLeft > 0) {
          const n = Math.min(payloadLeft, chunk.length - i);
          if (flipAt >= 0 && flipAt < n) {
            chunk[i + flipAt] ^= 0xff;
            flipped = true;
            flipAt = -1;
          } else if (flipAt >= 0) {
            flipAt -= n;
          }
          payloadLeft -= n;
          i += n;
          continue;
        }
        head.push(chunk[i++]!);
        if (head.length < 2) continue;
        const len7 = head[1]! & 0x7f;
        const headerBytes = 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (head[1]! & 0x80 ? 4 : 0);
        if (head.length < headerBytes) continue;
        const h = Buffer.from(head);
        payloadLeft = len7 === 126 ? h.readUInt16BE(2) : len7 === 127 ? Number(h.readBigUInt64BE(2)) : len7;
        const opcode = head[0]! & 0x0f;
        if (!flipped && flipAt < 0 && opcode === 0x2 && payloadLeft >= minBytes) flipAt = payloadLeft - 1;
        head = [];
      }
      return chunk;
    },
  };
}
