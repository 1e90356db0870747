// Public surface of the cluster state store: the Store interface, its backends, and openStore(url) for --store.
import { StoreError } from './errors.js';
import { EtcdStore, type EtcdStoreOptions } from './etcd.js';
import { LocalStoreClient, type LocalStoreClientOptions } from './local.js';
import type { Store } from './types.js';

export * from './types.js';
export { StoreError, type StoreErrorCode } from './errors.js';
export { KindCache, startInOrder, type KindCacheEvents, type StartableCache, type StartInOrderOptions } from './cache.js';
export { LocalStoreServer, LocalStoreClient, type ListenAddress, type LocalStoreServerOptions, type LocalStoreClientOptions } from './local.js';
export { EtcdStore, type EtcdStoreOptions } from './etcd.js';
export { isKind } from './validate.js';
export { GuardedStore, type GuardOptions, type StoreHealth } from './guard.js';

export type OpenStoreOptions = LocalStoreClientOptions & EtcdStoreOptions;

/** Parsed form of a --store URL. */
export type StoreAddress =
  | { backend: 'local'; socket: string }
  | { backend: 'local'; host: string; port: number }
  | { backend: 'etcd'; endpoints: { host: string; port: number }[] };

const FORMS = '"local+unix:///path/to.sock", "local://HOST:PORT", "etcd://HOST:PORT[,HOST:PORT…]" or "etcd+http://HOST:PORT[,http://HOST:PORT…]"';

/** `HOST:PORT` (IPv6 in brackets), with an optional trailing "/". */
function parseHostPort(text: string, bad: (why: string) => StoreError): { host: string; port: number } {
  const hp = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})\/?$/.exec(text);
  if (!hp) throw bad(text === '' ? 'expected HOST:PORT' : `expected HOST:PORT, not ${JSON.stringify(text)}`);
  const [, hostPart = '', portText = ''] = hp;
  const port = Number(portText);
  if (port < 1 || port > 65535) throw bad(`port ${portText} out of range`);
  return { host: hostPart.startsWith('[') ? hostPart.slice(1, -1) : hostPart, port };
}

/**
 * Parses `local+unix:///path.sock`, `local://HOST:PORT` and the etcd forms: `etcd://HOST:PORT` or several members
 * of one cluster, comma-separated, as `etcd://a:2379,b:2379` or `etcd+http://a:2379,http://b:2379` (the members
 * after the first may be written with or without `http://`).
 */
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
  if (scheme === 'etcd+https') throw bad('TLS to etcd is not supported');
  if (scheme === 'etcd' || scheme === 'etcd+http') {
    const endpoints = rest.split(',').map((member, i) => {
      if (i > 0 && /^https:\/\//.test(member)) throw bad(`member ${i + 1}: TLS to etcd is not supported`);
      return parseHostPort(i > 0 ? member.replace(/^http:\/\//, '') : member, (why) => bad(rest.includes(',') ? `member ${i + 1}: ${why}` : why));
    });
    const seen = new Set<string>();
    for (const e of endpoints) {
      const id = `${e.host}:${e.port}`;
      if (seen.has(id)) throw bad(`member ${id} is listed twice`);
      seen.add(id);
    }
    return { backend: 'etcd', endpoints };
  }
  if (scheme !== 'local') throw bad(`unknown scheme "${scheme}"`);
  return { backend: 'local', ...parseHostPort(rest, bad) };
}

/** A Store client for a --store URL. Nothing is connected until the first call. */
export function openStore(url: string, opts: OpenStoreOptions = {}): Store {
  const a = parseStoreUrl(url);
  if (a.backend === 'etcd') return new EtcdStore(a.endpoints, opts);
  const retry: LocalStoreClientOptions = {};
  if (opts.connectTimeoutMs !== undefined) retry.connectTimeoutMs = opts.connectTimeoutMs;
  if (opts.requestTimeoutMs !== undefined) retry.requestTimeoutMs = opts.requestTimeoutMs;
  if (opts.maxBackoffMs !== undefined) retry.maxBackoffMs = opts.maxBackoffMs;
  return new LocalStoreClient('socket' in a ? { socket: a.socket } : { host: a.host, port: a.port }, retry);
}
export { withLocalStore } from './testing.js';
