// Encrypted model serving (docs/smpc.md): every node can be a share holder and a crypto provider; what
// it is for a model is decided by the owner's client at upload. Attached to the node's router by server.ts.

import type { Logger } from '../../core/logger';
import type { NodeEvents } from '../events';
import type { GridRouter } from '../rpc/server';
import type { NodeIdentity } from '../identity';
import type { PeerLinks } from '../peers';
import type { Store } from '../store/sql';
import { registerAttest } from './attest';
import { ShareHolder } from './holder';
import { SmpcLinks } from './links';
import { CryptoProvider, DEFAULT_PROVIDER_LIMITS, type ProviderLimits } from './provider';
import { ShareStore } from './store';

export interface SmpcOptions {
  /** How long a step waits for the other share holder or the provider (ms). Default 30 s. */
  stepTimeoutMs?: number;
  /** Encrypted model shares held at once. Default 64. */
  maxModels?: number;
  /** Encrypted models one user may place on this node as a share holder. Default 16. */
  maxModelsPerOwner?: number;
  /** Bytes of share (parameters and weight masks) one user may place on this node. Default 256 MiB. */
  maxBytesPerOwner?: number;
  /** Encrypted queries this node runs at once as a share holder. Default 64. */
  maxQueries?: number;
  /** The crypto provider's bounds; an upload one holder announced waits 2 × stepTimeoutMs for the other by default. */
  provider?: Partial<ProviderLimits>;
}

export interface NodeSmpc { close(): void }

export async function attachSmpc(router: GridRouter, deps: {
  identity: NodeIdentity; peers: PeerLinks; db: Store; dataDir: string; events: NodeEvents; log: Logger; where(): string; options?: SmpcOptions;
}): Promise<NodeSmpc> {
  const o = deps.options ?? {};
  const stepTimeoutMs = o.stepTimeoutMs ?? 30_000;
  registerAttest(router, deps.identity);
  const holder = new ShareHolder({
    links: new SmpcLinks(deps.peers, deps.identity, stepTimeoutMs), selfId: deps.identity.id, log: deps.log, where: deps.where,
    stepTimeoutMs, maxModels: o.maxModels ?? 64, maxModelsPerOwner: o.maxModelsPerOwner ?? 16, maxBytesPerOwner: o.maxBytesPerOwner ?? 256 * 1024 * 1024,
    maxQueries: o.maxQueries ?? 64, store: await ShareStore.open(deps.db, deps.dataDir, deps.log), events: deps.events,
  });
  await holder.load();
  holder.register(router);
  const provider = new CryptoProvider(deps.identity, deps.db, deps.log, { ...DEFAULT_PROVIDER_LIMITS, pendingTtlMs: 2 * stepTimeoutMs, ...o.provider });
  await provider.load();
  provider.register(router);
  return {
    close() {
      holder.close();
      provider.close();
    },
  };
}
