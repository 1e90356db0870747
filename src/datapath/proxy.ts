// The datapath's side of the L7 proxy: the tendril_proxy map (listener port) and the local route for assigned packets.
import { execFileSync } from 'node:child_process';
import { DatapathError } from './errors.js';

export const PROXY_MAP = 'tendril_proxy';
/** bpf/lib/proxy.h MARK_MAGIC_TO_PROXY / MARK_MAGIC_MASK. */
const TO_PROXY_MARK = '0x200/0xf00';
const PROXY_TABLE = '2004';
const PROXY_RULE_PREF = '9';

/** tendril_proxy's one value: the port, host order. */
export function proxyConfigValue(port: number): Buffer {
  const v = Buffer.alloc(4);
  v.writeUInt16LE(port, 0);
  return v;
}

function ip(args: string[]): string {
  try {
    return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new DatapathError('TENDRIL_ERR_DATAPATH_CONFIG', `Cannot set up the proxy route: ip ${args.join(' ')}: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/**
 * Packets the datapath assigned to a proxy socket are addressed to pods (or to remote addresses): the stack would
 * forward them. The mark selects a table whose one route is "local 0.0.0.0/0 dev lo", as Cilium's proxy routing.
 * Idempotent; in the calling process's namespace (the node's).
 */
export function ensureProxyRoute(): void {
  ip(['route', 'replace', 'local', '0.0.0.0/0', 'dev', 'lo', 'table', PROXY_TABLE]);
  if (!ip(['rule', 'show', 'pref', PROXY_RULE_PREF]).includes(`lookup ${PROXY_TABLE}`)) {
    ip(['rule', 'add', 'pref', PROXY_RULE_PREF, 'fwmark', TO_PROXY_MARK, 'lookup', PROXY_TABLE]);
  }
}
