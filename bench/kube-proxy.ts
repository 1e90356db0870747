// The services phase's baseline: kube-proxy 1.32's iptables mode, built by the bench in a node namespace. The rule
// shape is kube-proxy's (pkg/proxy/iptables): nat PREROUTING and OUTPUT jump to KUBE-SERVICES, which holds one rule
// per service port (`-d VIP/32 -p tcp --dport P -j KUBE-SVC-…`, matched in order: the linear scan that grows with the
// number of services; kube-proxy writes them in Go map order, so a given service sits in the middle on average),
// each KUBE-SVC chain marks traffic for masquerade (`! -s <cluster CIDR>` by default; every source with
// --masquerade-all), picks a backend with `statistic --mode random --probability 1/(n-i)` and jumps to its KUBE-SEP
// chain, which marks hairpin traffic and DNATs to the backend; KUBE-POSTROUTING masquerades what is marked.
// KUBE-NODEPORTS is last in KUBE-SERVICES; the filter table gets kube-proxy's hooks (KUBE-PROXY-FIREWALL,
// KUBE-NODEPORTS, KUBE-EXTERNAL-SERVICES, KUBE-SERVICES on new connections, KUBE-FORWARD, KUBE-FIREWALL).
import { createHash } from 'node:crypto';

export interface KpService {
  /** "namespace/name:port", what kube-proxy hashes into its chain names. */
  name: string;
  vip: string;
  port: number;
  backends: Array<{ ip: string; port: number }>;
}

/** kube-proxy's chain name: prefix + the first 16 characters of base32(sha256(key)). */
export function kpChain(prefix: 'KUBE-SVC-' | 'KUBE-SEP-', key: string): string {
  const h = createHash('sha256').update(key).digest();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of h) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5 && out.length < 16) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    if (out.length >= 16) break;
  }
  return prefix + out;
}

/** The probability kube-proxy writes for backend i of n (the last one takes the rest, no rule match). */
export function kpProbability(i: number, n: number): string {
  return (1 / (n - i)).toFixed(10);
}

/**
 * Which ClusterIP traffic kube-proxy marks for masquerade in each KUBE-SVC chain: every source (--masquerade-all),
 * sources outside the cluster CIDR (its default when --cluster-cidr / the local-traffic detector is set), or none.
 */
export type KpMasquerade = 'all' | { clusterCidr: string } | 'none';

/** `iptables-restore` input (nat and filter tables) for the services, in kube-proxy's shape. */
export function kubeProxyRules(services: readonly KpService[], masquerade: KpMasquerade = 'all'): string {
  const chains = ['KUBE-SERVICES', 'KUBE-MARK-MASQ', 'KUBE-POSTROUTING'];
  const rules: string[] = [
    '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
    '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
    '-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000',
    '-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN',
    '-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000',
    '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully',
  ];
  for (const s of services) {
    const svc = kpChain('KUBE-SVC-', `${s.name}/tcp`);
    chains.push(svc);
    rules.push(`-A KUBE-SERVICES -d ${s.vip}/32 -p tcp -m comment --comment "${s.name} cluster IP" -m tcp --dport ${s.port} -j ${svc}`);
    if (masquerade === 'all') rules.push(`-A ${svc} -d ${s.vip}/32 -p tcp -m comment --comment "${s.name} cluster IP" -m tcp --dport ${s.port} -j KUBE-MARK-MASQ`);
    else if (masquerade !== 'none') rules.push(`-A ${svc} ! -s ${masquerade.clusterCidr} -d ${s.vip}/32 -p tcp -m comment --comment "${s.name} cluster IP" -m tcp --dport ${s.port} -j KUBE-MARK-MASQ`);
    s.backends.forEach((b, i) => {
      const sep = kpChain('KUBE-SEP-', `${s.name}/tcp/${b.ip}:${b.port}`);
      chains.push(sep);
      const pick = i < s.backends.length - 1 ? ` -m statistic --mode random --probability ${kpProbability(i, s.backends.length)}` : '';
      rules.push(`-A ${svc} -m comment --comment "${s.name} -> ${b.ip}:${b.port}"${pick} -j ${sep}`);
      rules.push(`-A ${sep} -s ${b.ip}/32 -m comment --comment "${s.name}" -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sep} -p tcp -m comment --comment "${s.name}" -m tcp -j DNAT --to-destination ${b.ip}:${b.port}`);
    });
  }
  // KUBE-NODEPORTS is the last rule of KUBE-SERVICES (every packet to no service port goes through it).
  chains.push('KUBE-NODEPORTS');
  rules.push('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS');
  return ['*nat', ...chains.map((c) => `:${c} - [0:0]`), ...rules, 'COMMIT', ...filterRules(), ''].join('\n');
}

/**
 * kube-proxy's filter table (no service without endpoints, no firewall source ranges: its chains are empty but
 * every new connection still walks the jumps): the hooks of INPUT, FORWARD and OUTPUT and KUBE-FORWARD.
 */
export function filterRules(): string[] {
  const chains = ['KUBE-EXTERNAL-SERVICES', 'KUBE-FIREWALL', 'KUBE-FORWARD', 'KUBE-NODEPORTS', 'KUBE-PROXY-FIREWALL', 'KUBE-SERVICES'];
  const newConn = '-m conntrack --ctstate NEW';
  return [
    '*filter',
    ...chains.map((c) => `:${c} - [0:0]`),
    `-A INPUT ${newConn} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
    '-A INPUT -m comment --comment "kubernetes health check service ports" -j KUBE-NODEPORTS',
    `-A INPUT ${newConn} -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
    '-A INPUT -j KUBE-FIREWALL',
    `-A FORWARD ${newConn} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
    '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
    `-A FORWARD ${newConn} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    `-A FORWARD ${newConn} -m comment --comment "kubernetes externally-visible service portals" -j KUBE-EXTERNAL-SERVICES`,
    `-A OUTPUT ${newConn} -m comment --comment "kubernetes load balancer firewall" -j KUBE-PROXY-FIREWALL`,
    `-A OUTPUT ${newConn} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES`,
    '-A OUTPUT -j KUBE-FIREWALL',
    // route_localnet is on for localhost NodePorts: kube-proxy drops what martian-looking traffic it would let in.
    '-A KUBE-FIREWALL ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m comment --comment "block incoming localnet connections" -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP',
    '-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT',
    '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT',
    'COMMIT',
  ];
}

/** The i-th (0-based) address of a /16 starting at `base` ("10.200"), skipping .0 and .255 host bytes. */
export function kpVip(base: string, i: number): string {
  const per = 254;
  const hi = Math.floor(i / per);
  if (hi > 255) throw new RangeError(`kpVip: ${i} services do not fit in ${base}.0.0/16`);
  return `${base}.${hi}.${(i % per) + 1}`;
}

/**
 * The restore input cut into pieces applied in order with `iptables-restore --noflush`: per table, its chain
 * declarations, then its rules, `linesPer` lines at a time. The same rules in the same order; iptables-nft 1.8.9
 * restores ~140k rules in one transaction in ~10 minutes (superlinear in the chains it holds), in pieces in ~20 s.
 */
export function restoreChunks(text: string, linesPer = 20_000): string[] {
  const out: string[] = [];
  let table = '';
  let decls: string[] = [];
  let rules: string[] = [];
  const flush = (): void => {
    for (const part of [decls, rules]) {
      for (let i = 0; i < part.length; i += linesPer) out.push([table, ...part.slice(i, i + linesPer), 'COMMIT', ''].join('\n'));
    }
    decls = [];
    rules = [];
  };
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) table = line;
    else if (line === 'COMMIT') flush();
    else if (line.startsWith(':')) decls.push(line);
    else if (line.startsWith('-A ')) rules.push(line);
  }
  return out;
}

/**
 * The conntrack settings kube-proxy 1.32 writes at start with its defaults (--conntrack-tcp-timeout-established
 * 24h, --conntrack-tcp-timeout-close-wait 1h), as per-namespace sysctls; and route_localnet for localhost NodePorts.
 * nf_conntrack_max it only raises to max(32768 × CPUs, 131072), which this host's value already exceeds.
 */
export const KP_SYSCTLS = [
  'net.netfilter.nf_conntrack_tcp_timeout_established=86400',
  'net.netfilter.nf_conntrack_tcp_timeout_close_wait=3600',
  'net.ipv4.conf.all.route_localnet=1',
];
