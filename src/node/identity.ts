// A node's identity: an Ed25519 key pair, and an id bound to its public key, so that a peer can prove
// who it is when another node links to it (peers.ts, docs/node.md "Node identity and peer links").
//
// The id of a node is the first 16 bytes of sha256(raw public key), in hex: any node checks that binding
// by itself, with nothing to trust first. Data dirs created before nodes had keys keep their UUID id
// for as long as the first key they get stays in use; peers pin that key on their first link (trust on
// first use). A node whose key changes (lost, replaced) takes the id of its new key: it is a new node.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { gridError } from '../core/errors';
import type { Logger } from '../core/logger';
import type { Store } from './store/sql';

export interface NodeIdentity {
  id: string;
  name: string;
  version: string;
  /** The raw 32-byte Ed25519 public key, base64url: what get-id shows and prove-identity signs with. */
  publicKey: string;
  /** Signs `message` with the node's private key (Ed25519). */
  sign(message: Buffer): Buffer;
}

export const KEY_FILE = 'node.key';
/** Ids derived from a key; anything else is a pre-key id, bound by pinning. */
const DERIVED_ID = /^[0-9a-f]{32}$/;
const META_ID = 'node_id';
/** The public key the node's id was last bound to, so a changed key is noticed at start. */
const META_KEY = 'node_public_key';
/** Replicas on a shared database: the node's private key (PKCS#8 PEM), so every replica is the same node. */
const META_PRIVATE_KEY = 'node_private_key';

/** The id a key gives a node: sha256 of the raw public key, first 16 bytes, hex. */
export function nodeIdOf(publicKey: string): string {
  return crypto.createHash('sha256').update(Buffer.from(publicKey, 'base64url')).digest().subarray(0, 16).toString('hex');
}

export function isDerivedId(id: string): boolean {
  return DERIVED_ID.test(id);
}

/**
 * What a node signs to prove its identity to the node dialing it. The prefix keeps these signatures
 * useless for anything else; the verifier's id comes last and is an id (no newlines), so no two
 * field lists give the same bytes.
 */
export function proofMessage(challenge: string, proverId: string, verifierId: string): Buffer {
  return Buffer.from(`grid-node-proof/v1\n${challenge}\n${proverId}\n${verifierId}`, 'utf8');
}

function rawPublicKey(key: crypto.KeyObject): string {
  const x = (key.export({ format: 'jwk' }) as { x?: string }).x;
  if (x === undefined) throw new TypeError('not an Ed25519 key');
  return x;
}

/** The canonical base64url of an Ed25519 public key given as base64url, or undefined if it is none. */
export function importPublicKey(publicKey: string): { key: crypto.KeyObject; canonical: string } | undefined {
  try {
    const key = crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicKey }, format: 'jwk' });
    return { key, canonical: rawPublicKey(key) };
  } catch {
    return undefined;
  }
}

/** Writes a new key readable by the owner only; the rename makes a half-written key impossible. */
function createKeyFile(file: string): crypto.KeyObject {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  const tmp = `${file}.tmp`;
  fs.rmSync(tmp, { force: true });
  // The mode is set when the file is created, so the key is never readable by others, not even briefly.
  const fd = fs.openSync(tmp, 'wx', 0o600);
  try {
    fs.writeSync(fd, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  try {
    const dirFd = fs.openSync(path.dirname(file), 'r');
    try { fs.fsyncSync(dirFd); } finally { fs.closeSync(dirFd); }
  } catch { /* directories cannot be opened on Windows; the rename is still atomic */ }
  return privateKey;
}

function readKeyFile(file: string): crypto.KeyObject {
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(fs.readFileSync(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw gridError('NOT_FOUND', `the node key file ${file} does not exist; a key file given with keyFile is never created by the node (copy the node.key of the node whose identity this one shares)`);
    }
    throw gridError('INVALID_INPUT', `the node key file ${file} is not a private key (PKCS#8 PEM): ${(err as Error).message}; restore it from a backup, or remove it to give the node a new key and so a new id`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw gridError('INVALID_INPUT', `the node key file ${file} holds a ${key.asymmetricKeyType ?? 'unknown'} key; a node key is Ed25519`);
  }
  return key;
}

/** Group or other may read the key: tighten our own file, warn about one we were given. */
function checkKeyMode(file: string, own: boolean, log: Logger): void {
  if (process.platform === 'win32') return;
  const mode = fs.statSync(file).mode & 0o777;
  if ((mode & 0o077) === 0) return;
  if (own) {
    try {
      fs.chmodSync(file, 0o600);
      log.warn({ file, mode: mode.toString(8) }, 'the node key was readable by other users; its mode is now 0600');
    } catch (err) {
      log.warn({ file, mode: mode.toString(8), err: (err as Error).message }, 'the node key is readable by other users and its mode cannot be changed here');
    }
  } else {
    log.warn({ file, mode: mode.toString(8) }, 'the node key file is readable by other users; make it 0600');
  }
}

export interface IdentityOptions {
  db: Store;
  dataDir: string;
  /** A key file to use instead of `<dataDir>/node.key` (replicas that share one identity); never created. */
  keyFile?: string;
  name: string;
  version: string;
  log: Logger;
}

/**
 * The key of a node whose replicas share one database: created by the first replica to start (the
 * insert that loses a race changes nothing, and everyone reads the winner's key).
 */
async function sharedKey(db: Store): Promise<crypto.KeyObject> {
  const { privateKey } = crypto.generateKeyPairSync('ed25519');
  await db.run('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING', [META_PRIVATE_KEY, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string]);
  const pem = await db.getMeta(META_PRIVATE_KEY);
  try {
    return crypto.createPrivateKey(pem!);
  } catch (err) {
    throw gridError('INVALID_INPUT', `the node key in the database (meta ${META_PRIVATE_KEY}) is not a private key (PKCS#8 PEM): ${(err as Error).message}`);
  }
}

/** Loads (or, on the first start, creates) the node's key and settles its id. */
export async function loadNodeIdentity(o: IdentityOptions): Promise<NodeIdentity> {
  let privateKey: crypto.KeyObject;
  if (o.keyFile !== undefined) {
    const file = path.resolve(o.keyFile);
    privateKey = readKeyFile(file);
    checkKeyMode(file, false, o.log);
  } else if (o.db.kind !== 'embedded') {
    privateKey = await sharedKey(o.db);
  } else {
    const file = path.join(o.dataDir, KEY_FILE);
    privateKey = fs.existsSync(file) ? readKeyFile(file) : createKeyFile(file);
    checkKeyMode(file, true, o.log);
  }
  const publicKey = rawPublicKey(crypto.createPublicKey(privateKey));
  const stored = await o.db.getMeta(META_ID);
  const boundKey = await o.db.getMeta(META_KEY);
  let id: string;
  if (stored !== undefined && !isDerivedId(stored) && (boundKey === undefined || boundKey === publicKey)) {
    // A pre-key id keeps working: bound to the first key it meets, which peers pin.
    id = stored;
  } else {
    id = nodeIdOf(publicKey);
    if (stored !== undefined && stored !== id) {
      o.log.warn({ previous: stored, id }, 'the node key changed (node.key lost or replaced): this node now has the id of its new key, and nodes linked to the previous id refuse it until an admin links it again');
    }
  }
  if (stored !== id) await o.db.setMeta(META_ID, id);
  if (boundKey !== publicKey) await o.db.setMeta(META_KEY, publicKey);
  return {
    id,
    name: o.name,
    version: o.version,
    publicKey,
    sign: (message) => crypto.sign(null, message, privateKey),
  };
}

/** Keys of pre-key peers, pinned on their first verified link; kept in the node's metadata. */
export interface PeerPins {
  get(id: string): Promise<string | undefined>;
  set(id: string, publicKey: string): Promise<void>;
}

export function metaDbPins(db: Store): PeerPins {
  return {
    get: (id) => db.getMeta(`peer_key:${id}`),
    set: (id, publicKey) => db.setMeta(`peer_key:${id}`, publicKey),
  };
}
