// Messages of the socket benchmark, shared by its client and its server process.
import { z } from 'zod';
import { defineRequest } from '../../src/core/protocol/catalogue';

export const BenchEcho = defineRequest('bench-echo', { request: z.object({ n: z.number(), text: z.string() }), reply: z.object({ n: z.number(), text: z.string() }) });
export const BenchClaim = defineRequest('bench-claim', {
  request: z.object({ transfer_id: z.string() }),
  reply: z.object({ size: z.number(), sha256: z.string(), rssBase: z.number(), rssPeak: z.number() }),
});

export const BenchOffer = defineRequest('bench-offer', {
  request: z.object({ seed: z.number(), size: z.number() }),
  reply: z.object({ transfer_id: z.string(), size: z.number(), sha256: z.string() }),
});
export const BenchRss = defineRequest('bench-rss', { request: z.object({ reset: z.boolean() }), reply: z.object({ rssBase: z.number(), rssPeak: z.number() }) });
