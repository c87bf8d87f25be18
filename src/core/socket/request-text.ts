// The text frame of a request without an attachment: JSON.stringify(env), without serialising the
// envelope around `data` on every request (the request/response hot path, issue 18).

import type { RequestDef } from '../protocol/catalogue';
import type { PendingRequest } from './pending-requests';

/** `{"type":<type>,"request_id":"` of each message definition, made once. */
const heads = new WeakMap<RequestDef, string>();

/**
 * The same text as JSON.stringify(p.env) for an envelope `{type, request_id, data?}` whose request id
 * needs no escaping (GridSocket's own ids: a hex prefix and a base36 counter).
 */
export function requestText(p: Pick<PendingRequest, 'def' | 'env' | 'id'>): string {
  let head = p.def === undefined ? undefined : heads.get(p.def);
  if (head === undefined) {
    head = `{"type":${JSON.stringify(p.env.type)},"request_id":"`;
    if (p.def !== undefined) heads.set(p.def, head);
  }
  const data = p.env.data === undefined ? undefined : JSON.stringify(p.env.data);
  return data === undefined ? `${head}${p.id}"}` : `${head}${p.id}","data":${data}}`;
}
