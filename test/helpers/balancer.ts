// A TCP load balancer in front of node replicas, as an operator's reverse proxy would be: each new
// connection goes to the first backend that accepts it (a dead replica refuses, so its clients land on the
// next one), and the bytes each backend received from clients are counted. A test picks the backends
// (the list is read for every new connection) and can cut every connection, as a network would.

import net from 'node:net';

export interface Balancer {
  readonly port: number;
  readonly url: string;
  /** Bytes clients sent to the backend on `port`, over all its connections. */
  bytesTo(port: number): number;
  /** Connections made to the backend on `port`. */
  connectionsTo(port: number): number;
  /** Destroys every connection through the balancer (a network cut); new ones are accepted again. */
  cut(): void;
  close(): Promise<void>;
}

export async function startBalancer(backends: () => readonly number[]): Promise<Balancer> {
  const sockets = new Set<net.Socket>();
  const bytes = new Map<number, number>();
  const connections = new Map<number, number>();
  const dial = (ports: readonly number[], i: number, client: net.Socket): void => {
    if (i >= ports.length) { client.destroy(); return; }
    const port = ports[i]!;
    const upstream = net.connect({ port, host: '127.0.0.1' });
    const refused = () => { upstream.destroy(); dial(ports, i + 1, client); };
    upstream.once('error', refused);
    upstream.once('connect', () => {
      upstream.off('error', refused);
      connections.set(port, (connections.get(port) ?? 0) + 1);
      sockets.add(upstream);
      client.on('data', (d: Buffer) => { bytes.set(port, (bytes.get(port) ?? 0) + d.length); });
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
      const end = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
  };
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    sockets.add(client);
    dial(backends(), 0, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: `ws://127.0.0.1:${port}`,
    bytesTo: (p) => bytes.get(p) ?? 0,
    connectionsTo: (p) => connections.get(p) ?? 0,
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
