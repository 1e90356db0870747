// Public surface of the cluster state store: the Store interface, its backends, and openStore(url) for --store.
import { StoreError } from './errors.js';
import { EtcdStore, type EtcdStoreOptions } from './etcd.js';
import { LocalStoreClient, type LocalStoreClientOptions } from './local.js';
import type { Store } from './types.js';

export * from './types.js';
export { StoreError, type StoreErrorCode } from './errors.js';
export { KindCache, type KindCacheEvents } from './cache.js';
export { LocalStoreServer, LocalStoreClient, type ListenAddress, type LocalStoreServerOptions, type LocalStoreClientOptions } from './local.js';
export { EtcdStore, type EtcdStoreOptions } from './etcd.js';
export { isKind } from './validate.js';

export type OpenStoreOptions = LocalStoreClientOptions & EtcdStoreOptions;

/** Parsed form of a --store URL. */
export type StoreAddress =
  | { backend: 'local'; socket: string }
  | { backend: 'local'; host: string; port: number }
  | { backend: 'etcd'; host: string; port: number };

const FORMS = '"local+unix:///path/to.sock", "local://HOST:PORT" or "etcd://HOST:PORT"';

/** Parses `local+unix:///path.sock`, `local://HOST:PORT` and `etcd://HOST:PORT`. */
export function parseStoreUrl(url: string): StoreAddress {
  const bad = (why: string): StoreError => new StoreError('TENDRIL_ERR_STORE_INVALID', `Invalid store URL ${JSON.stringify(url)}: ${why}; expected ${FORMS}`);
  const m = /^([a-z0-9+]+):\/\/(.*)$/.exec(url);
  if (!m) throw bad('no scheme');
  const [, scheme, rest = ''] = m;
  if (scheme === 'local+unix') {
    if (!rest.startsWith('/')) throw bad('socket path must be absolute');
    if (rest.includes('?') || rest.includes('#')) throw bad('socket path must not have a query or fragment');
    return { backend: 'local', socket: rest };
  }
  if (scheme !== 'local' && scheme !== 'etcd') throw bad(`unknown scheme "${scheme}"`);
  const hp = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(rest);
  if (!hp) throw bad('expected HOST:PORT');
  const [, hostPart = '', portText = ''] = hp;
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad(`port ${portText} out of range`);
  const host = hostPart.startsWith('[') ? hostPart.slice(1, -1) : hostPart;
  return scheme === 'etcd' ? { backend: 'etcd', host, port } : { backend: 'local', host, port };
}

/** A Store client for a --store URL. Nothing is connected until the first call. */
export function openStore(url: string, opts: OpenStoreOptions = {}): Store {
  const a = parseStoreUrl(url);
  if (a.backend === 'etcd') return new EtcdStore({ host: a.host, port: a.port }, opts);
  const retry: LocalStoreClientOptions = {};
  if (opts.connectTimeoutMs !== undefined) retry.connectTimeoutMs = opts.connectTimeoutMs;
  if (opts.requestTimeoutMs !== undefined) retry.requestTimeoutMs = opts.requestTimeoutMs;
  if (opts.maxBackoffMs !== undefined) retry.maxBackoffMs = opts.maxBackoffMs;
  return new LocalStoreClient('socket' in a ? { socket: a.socket } : { host: a.host, port: a.port }, retry);
}
