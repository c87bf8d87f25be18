// Why a connection attempt failed, in words a user can act on. A refused port, an unknown host name,
// a silent address, an untrusted certificate and an HTTP answer to the upgrade all end in the same
// close 1006; the error (or the HTTP answer) before it says which one it was.

import { ErrorCodes, isErrorCode, type ErrorKey } from '../errors';

export interface ConnectFailure {
  /** The errno or TLS code (ECONNREFUSED, ENOTFOUND, ERR_TLS_…), HANDSHAKE_TIMEOUT, or HTTP_<status>. */
  readonly cause: string;
  /** e.g. "connection refused by 127.0.0.1:5000: nothing listens there — is the node running?" */
  readonly message: string;
  /** Trying again cannot help (an untrusted certificate, a 4xx answer): give up at once with `key`. */
  readonly final: boolean;
  /** The code a final failure is reported with. */
  readonly key: ErrorKey;
  readonly details: Record<string, unknown>;
}

/** Most bytes of an HTTP refusal's body read for the node's own error message. */
export const MAX_REFUSAL_BODY = 4096;

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** The failure an error of a connection attempt stands for; undefined for errors that say nothing new. */
export function failureFromError(url: string, err: NodeJS.ErrnoException, handshakeTimeoutMs: number): ConnectFailure | undefined {
  const host = hostOf(url);
  const code = typeof err.code === 'string' ? err.code : undefined;
  const retry = (cause: string, message: string): ConnectFailure => ({ cause, message, final: false, key: 'RECONNECT_LIMIT', details: { cause } });
  if (code !== undefined && isTlsError(code)) {
    return {
      cause: code, final: true, key: 'TLS_ERROR', details: { cause: code, reason: code },
      message: `the TLS handshake with ${url} failed: ${err.message} (${code}); ` +
        'trust the node\'s certificate (its CA, or the certificate itself as `ca`) or connect by a name the certificate holds',
    };
  }
  switch (code) {
    case 'ECONNREFUSED':
      return retry(code, `connection refused by ${host}: nothing listens there — is the node running?`);
    case 'ENOTFOUND':
      return retry(code, `the host name ${new URL(url).hostname} was not found (ENOTFOUND): check the node's address`);
    case 'EAI_AGAIN':
      return retry(code, `the host name ${new URL(url).hostname} could not be looked up (EAI_AGAIN): check the network and DNS`);
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return retry(code, `${host} is unreachable (${code}): check the node's address and this machine's network`);
    case 'ETIMEDOUT':
      return retry(code, `${host} did not answer (ETIMEDOUT): check the node's address, and that no firewall drops the connection`);
    case 'ECONNRESET':
      return retry(code, `${host} reset the connection before the WebSocket was open (ECONNRESET): is it a grid node, and is it starting or overloaded?`);
  }
  // ws aborts a handshake that outlives its timeout with this message and no code.
  if (code === undefined && /handshake has timed out/i.test(err.message)) {
    return retry('HANDSHAKE_TIMEOUT', `${host} did not complete the WebSocket handshake within ${handshakeTimeoutMs} ms: check the address (is it a grid node?) and that no firewall holds the connection`);
  }
  return undefined;
}

/**
 * The failure an HTTP answer other than 101 to the upgrade stands for. A 4xx is a deliberate refusal
 * (an origin the node does not allow, a path that is not a node): final, except 408 and 429.
 */
export function failureFromResponse(url: string, status: number, statusText: string | undefined, body: string): ConnectFailure {
  const cause = `HTTP_${status}`;
  const final = status >= 400 && status < 500 && status !== 408 && status !== 429;
  const answer = `HTTP ${status}${statusText ? ` ${statusText}` : ''}`;
  const grid = gridErrorOf(body);
  if (grid !== undefined) {
    const key = (Object.keys(ErrorCodes) as ErrorKey[]).find((k) => ErrorCodes[k] === grid.code)!;
    return { cause, final, key: final ? key : 'RECONNECT_LIMIT', details: { cause, status, node_code: grid.code }, message: `${hostOf(url)} refused the connection (${answer}): ${grid.message}` };
  }
  const what = status === 404
    ? 'it is not a grid node, or the URL\'s path is wrong'
    : final ? 'it is not a grid node that accepts this client' : 'the server or a proxy in front of it is failing';
  return { cause, final, key: final ? 'NOT_CONNECTED' : 'RECONNECT_LIMIT', details: { cause, status }, message: `${url} answered ${answer} instead of opening a WebSocket: ${what}` };
}

/** The `{ error: { code, message } }` body a grid node refuses with, if that is what `body` is. */
function gridErrorOf(body: string): { code: string; message: string } | undefined {
  try {
    const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown } };
    const { code, message } = parsed.error ?? {};
    if (isErrorCode(code) && typeof message === 'string') return { code, message: message.slice(0, 500) };
  } catch {
    // not JSON: not one of ours
  }
  return undefined;
}

/** Certificate and handshake failures (OpenSSL verify codes, Node's TLS codes); not a dropped connection. */
export function isTlsError(code: string): boolean {
  return /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|HOSTNAME_MISMATCH$)/.test(code);
}
