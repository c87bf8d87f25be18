// One catalogue of coded errors, shared by the node, the client, the CLIs and the extension.
// A key's code is always `GRID_ERR_<KEY>` (a unit test holds us to it), so a code seen in a log
// can be found here by eye.

export const ErrorCodes = {
  /** A request got no reply within its timeout. */
  TIMEOUT: 'GRID_ERR_TIMEOUT',
  /** The caller aborted the request (AbortSignal) or cancelled the stream. */
  ABORTED: 'GRID_ERR_ABORTED',
  /** The connection dropped while a non-idempotent request was in flight. */
  CONNECTION_DROPPED: 'GRID_ERR_CONNECTION_DROPPED',
  /** No connection is open and none is being established. */
  NOT_CONNECTED: 'GRID_ERR_NOT_CONNECTED',
  /** The reconnect policy gave up. */
  RECONNECT_LIMIT: 'GRID_ERR_RECONNECT_LIMIT',
  /** The socket was disposed; it cannot be used again. */
  DISPOSED: 'GRID_ERR_DISPOSED',
  /** A frame could not be parsed (not JSON, not an envelope, bad binary header). */
  MALFORMED_FRAME: 'GRID_ERR_MALFORMED_FRAME',
  /** The message type is not in the catalogue. */
  UNKNOWN_TYPE: 'GRID_ERR_UNKNOWN_TYPE',
  /** The message's data does not match its schema. */
  INVALID_MESSAGE: 'GRID_ERR_INVALID_MESSAGE',
  /** A frame or payload is larger than the receiver accepts. */
  PAYLOAD_TOO_LARGE: 'GRID_ERR_PAYLOAD_TOO_LARGE',
  /** A transferred payload's sha256 differs from the announced one. */
  CHECKSUM_MISMATCH: 'GRID_ERR_CHECKSUM_MISMATCH',
  /** A transfer id is unknown (never started, finished, or expired). */
  TRANSFER_NOT_FOUND: 'GRID_ERR_TRANSFER_NOT_FOUND',
  /** The URL is not a ws:// or wss:// URL. */
  INVALID_URL: 'GRID_ERR_INVALID_URL',
  /** The operation needs an authenticated session. */
  UNAUTHENTICATED: 'GRID_ERR_UNAUTHENTICATED',
  /** Wrong user name or password, or an expired token. */
  BAD_CREDENTIALS: 'GRID_ERR_BAD_CREDENTIALS',
  /** The session is authenticated but the model/dataset does not allow this. */
  FORBIDDEN: 'GRID_ERR_FORBIDDEN',
  NOT_FOUND: 'GRID_ERR_NOT_FOUND',
  ALREADY_EXISTS: 'GRID_ERR_ALREADY_EXISTS',
  /** An id contains characters outside [A-Za-z0-9._-] or is too long. */
  INVALID_ID: 'GRID_ERR_INVALID_ID',
  /** Bytes that are not a loadable ONNX model. */
  INVALID_MODEL: 'GRID_ERR_INVALID_MODEL',
  /** Inference or training inputs with a wrong name, dtype or shape. */
  INVALID_INPUT: 'GRID_ERR_INVALID_INPUT',
  /** A tensor's bytes do not decode (bad dtype code, length mismatch). */
  INVALID_TENSOR: 'GRID_ERR_INVALID_TENSOR',
  /** A dataset file that cannot be read as CSV / .npy / TensorProto. */
  INVALID_DATASET: 'GRID_ERR_INVALID_DATASET',
  /** An ONNX operator the training-plan builder has no gradient rule for. */
  UNSUPPORTED_OPERATOR: 'GRID_ERR_UNSUPPORTED_OPERATOR',
  /** A training job failed on the node. */
  JOB_FAILED: 'GRID_ERR_JOB_FAILED',
  /** The node's queue of work (e.g. training jobs) is full; try again later. */
  BUSY: 'GRID_ERR_BUSY',
  /** Another grid node process owns the data dir. */
  DATA_DIR_IN_USE: 'GRID_ERR_DATA_DIR_IN_USE',
  /** The node's database (PostgreSQL) cannot be reached or went away; retry when it is back. */
  DATABASE_UNAVAILABLE: 'GRID_ERR_DATABASE_UNAVAILABLE',
  /** The port a node was asked to listen on is taken. */
  PORT_IN_USE: 'GRID_ERR_PORT_IN_USE',
  /** Too many attempts (e.g. wrong passwords) from this user or address; `details.retry_after_ms` says when to try again. */
  RATE_LIMITED: 'GRID_ERR_RATE_LIMITED',
  /** A per-connection bound (open streams, pending requests, buffered bytes) is reached. */
  CONNECTION_LIMIT: 'GRID_ERR_CONNECTION_LIMIT',
  /** The user's share of the node (uploads in flight, bytes held) is used up. */
  QUOTA_EXCEEDED: 'GRID_ERR_QUOTA_EXCEEDED',
  /** The node's disk cannot hold what was asked (checked up front, with a margin). */
  INSUFFICIENT_STORAGE: 'GRID_ERR_INSUFFICIENT_STORAGE',
  /** A browser page from an origin the node does not allow. */
  ORIGIN_NOT_ALLOWED: 'GRID_ERR_ORIGIN_NOT_ALLOWED',
  /** A peer node could not prove the identity it claims (its key does not match its id). */
  PEER_UNVERIFIED: 'GRID_ERR_PEER_UNVERIFIED',
  /** A model uses an operator the encrypted (SMPC) evaluator does not support; nothing was shared. */
  SMPC_UNSUPPORTED: 'GRID_ERR_SMPC_UNSUPPORTED',
  /** An encrypted inference could not finish (a share holder or the crypto provider went away, timed out or sent malformed shares); no output is returned. */
  SMPC_ABORTED: 'GRID_ERR_SMPC_ABORTED',
  /** The shares on the two share holders do not belong together (different uploads). */
  SMPC_SHARES_MISMATCH: 'GRID_ERR_SMPC_SHARES_MISMATCH',
  /** The crypto provider was asked for randomness for an encrypted model (upload) it does not know, or by nodes that are not its share holders. */
  SMPC_UNKNOWN_UPLOAD: 'GRID_ERR_SMPC_UNKNOWN_UPLOAD',
  /** The TLS handshake failed (untrusted or mismatched certificate). */
  TLS_ERROR: 'GRID_ERR_TLS_ERROR',
  /** A federated-learning report or download for a cycle that has already closed (averaged). */
  CYCLE_CLOSED: 'GRID_ERR_CYCLE_CLOSED',
  /** An ONNX averaging plan whose inputs or outputs do not fit the FL process's parameters (or that does not run). */
  INVALID_AVERAGING_PLAN: 'GRID_ERR_INVALID_AVERAGING_PLAN',
  /** Our FL worker cannot train this process: it serves no ONNX model to derive a training plan from (a syft-proto State). */
  FL_NOT_TRAINABLE: 'GRID_ERR_FL_NOT_TRAINABLE',
  /** The node takes no shared memory from this connection (turned off, not on this machine, or not the same OS user); the socket carries the tensors instead. */
  SHM_UNAVAILABLE: 'GRID_ERR_SHM_UNAVAILABLE',
  /** A shared-memory region failed the node's checks when registered (a symlink, not a regular file, another user's file, readable by others, outside the per-user folder, too small or too big). */
  SHM_REGION_REFUSED: 'GRID_ERR_SHM_REGION_REFUSED',
  /** A request names a shared-memory region this connection never registered, or unregistered. */
  SHM_REGION_NOT_FOUND: 'GRID_ERR_SHM_REGION_NOT_FOUND',
  /** A (region, offset, length) reference reaches outside its region. */
  SHM_OUT_OF_BOUNDS: 'GRID_ERR_SHM_OUT_OF_BOUNDS',
  /** A bug or an unexpected failure; the message says where to look. */
  INTERNAL: 'GRID_ERR_INTERNAL',
} as const;

export type ErrorKey = keyof typeof ErrorCodes;
export type ErrorCode = (typeof ErrorCodes)[ErrorKey];

const knownCodes = new Set<string>(Object.values(ErrorCodes));

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && knownCodes.has(value);
}

/** The error every layer throws and every wire error reply carries. */
export class GridError extends Error {
  override readonly name = 'GridError';
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.details = details;
  }

  /** The wire form of an error reply's `data`. */
  toWire(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }

  /**
   * Also true for a GridError made by another copy of this module: the extension ships two bundles
   * (activation and its lazily loaded half), each with its own copy of this class.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof Error && value.name === 'GridError' && isErrorCode((value as { code?: unknown }).code);
  }

  static fromWire(data: { code: string; message: string; details?: Record<string, unknown> }): GridError {
    const code = isErrorCode(data.code) ? data.code : ErrorCodes.INTERNAL;
    return new GridError(code, data.message, data.details);
  }
}

export function gridError(key: ErrorKey, message: string, details?: Record<string, unknown>): GridError {
  return new GridError(ErrorCodes[key], message, details);
}

/** Wraps anything thrown into a GridError, keeping GridErrors as they are. */
export function toGridError(err: unknown, fallback: ErrorKey = 'INTERNAL'): GridError {
  if (err instanceof GridError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new GridError(ErrorCodes[fallback], message, undefined, { cause: err });
}
