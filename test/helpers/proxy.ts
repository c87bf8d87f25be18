// A TCP proxy between a client and a node, so a test can cut the network mid-transfer the way a
// dropped Wi-Fi link would, while both ends keep running.

import net from 'node:net';

export interface CuttableProxy {
  readonly port: number;
  /** Destroys every connection through the proxy; new connections are accepted again. */
  cut(): void;
  close(): Promise<void>;
}

/** `fromAddress` makes the node see the proxy's connections come from that local address (e.g. 127.0.0.2). */
export async function startProxy(targetPort: number, host = '127.0.0.1', fromAddress?: string): Promise<CuttableProxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ port: targetPort, host, ...(fromAddress !== undefined && { localAddress: fromAddress }) });
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
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
