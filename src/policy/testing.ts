// Test fixtures for the policy compiler: the upstream e2e cluster model (namespaces x,y,z x pods a,b,c) and a
// reference evaluator that applies compiled entries exactly as the datapath does (LPM lookups by identity, by the
// address's ipBlock identity and by "any").
import { cidrContains, parseCidr, parseIPv4 } from '../util/ip.js';
import { PolicyCompiler } from './compiler.js';
import { IDENTITY_HOST, IDENTITY_WORLD, reservedIdentities } from './identity.js';
import { parsePolicies } from './parse.js';
import { PROTO_ICMP, PROTO_SCTP, PROTO_TCP, PROTO_UDP } from './ports.js';
import type { ClusterView, Direction, EndpointPolicy, EndpointView, EnforcementMode, HttpRule, IdentityInfo, L4Protocol, Policy, PolicyEntry } from './types.js';

export const NAMESPACES = ['x', 'y', 'z'] as const;
export const PODS = ['a', 'b', 'c'] as const;
export const PROTOCOLS: readonly L4Protocol[] = ['TCP', 'UDP', 'SCTP'];
/** What reach() can probe: an L4 protocol, or ICMP with port = type << 8 | code (the datapath's lookup). */
export type ProbeProtocol = L4Protocol | 'ICMP';
const PROTO: Record<ProbeProtocol, number> = { TCP: PROTO_TCP, UDP: PROTO_UDP, SCTP: PROTO_SCTP, ICMP: PROTO_ICMP };

/** CIDR identities the agent would have allocated for the CIDRs the test policies name. */
export const CIDR_IDENTITIES: IdentityInfo[] = [
  { id: 16777217, labels: ['reserved:world', 'cidr:10.0.0.0/8'], cidr: '10.0.0.0/8' },
  { id: 16777218, labels: ['reserved:world', 'cidr:10.1.0.0/16'], cidr: '10.1.0.0/16' },
  { id: 16777219, labels: ['reserved:world', 'cidr:192.168.0.0/24'], cidr: '192.168.0.0/24' },
];

/** Where the agent numbers ipBlock identities in these fixtures (after the CIDR ones). */
export const IPBLOCK_ID_BASE = 16777300;

export interface TestPod extends EndpointView {
  /** "x/a" */
  name: string;
  /** 10.244.<namespace index>.<10 + pod index>: x/a 10.244.0.10, z/c 10.244.2.12. */
  ip: string;
}

function namedPorts(): EndpointView['namedPorts'] {
  const out: EndpointView['namedPorts'] = [];
  for (const port of [80, 81]) for (const p of PROTOCOLS) out.push({ name: `serve-${port}-${p.toLowerCase()}`, port, protocol: p });
  return out;
}

/** Pods x/a .. z/c with labels pod=<p>, namespace labels ns=<n> and kubernetes.io/metadata.name=<n>, each
 *  serving TCP/UDP/SCTP 80 and 81 under the e2e names serve-80-tcp, serve-81-udp, ... */
export function makePods(): TestPod[] {
  const pods: TestPod[] = [];
  NAMESPACES.forEach((ns, i) =>
    PODS.forEach((pod, j) => {
      const identity = 256 + i * 3 + j;
      pods.push({
        name: `${ns}/${pod}`,
        ip: `10.244.${i}.${10 + j}`,
        id: identity - 200,
        namespace: ns,
        identity,
        labels: [
          `k8s:pod=${pod}`,
          `k8s:io.kubernetes.pod.namespace=${ns}`,
          `k8s:io.cilium.k8s.namespace.labels.ns=${ns}`,
          `k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=${ns}`,
        ],
        namedPorts: namedPorts(),
      });
    }),
  );
  return pods;
}

export const POD_LIST = makePods();

/** The ipBlock identities the agent allocates for the ipBlocks of @policies, numbered in PolicyCompiler.ipBlocksOf order. */
export function ipBlockIdentities(policies: readonly Policy[]): IdentityInfo[] {
  return PolicyCompiler.ipBlocksOf(policies).map((b, i) => ({ id: IPBLOCK_ID_BASE + i, labels: [`ipblock:${b}`], ipBlock: b }));
}

export function clusterView(pods: readonly TestPod[] = POD_LIST, blocks: readonly IdentityInfo[] = []): ClusterView {
  return {
    identities: [...reservedIdentities(), ...pods.map((p) => ({ id: p.identity, labels: p.labels })), ...CIDR_IDENTITIES, ...blocks],
    endpoints: pods.map((p) => ({ identity: p.identity, namedPorts: p.namedPorts })),
  };
}

/** Who talks: a pod ("x/a"), the local host ("host") or an outside address ("ip:10.1.2.3"). */
export type Actor = string;

/** The node's address in these fixtures (the host actor). */
export const HOST_IP = '10.244.255.1';

function addressOf(actor: Actor): string {
  if (actor === 'host') return HOST_IP;
  if (actor.startsWith('ip:')) return actor.slice(3);
  const pod = POD_LIST.find((p) => p.name === actor);
  if (pod === undefined) throw new Error(`unknown actor ${actor}`);
  return pod.ip;
}

/** The ipBlock trie: the narrowest block containing the actor's address, 0 when none does. */
function blockOf(actor: Actor, blocks: readonly IdentityInfo[]): number {
  const ip = parseIPv4(addressOf(actor));
  let best: { id: number; bits: number } | undefined;
  for (const b of blocks) {
    const cidr = parseCidr(b.ipBlock!);
    if (cidrContains(cidr, ip) && (best === undefined || cidr.bits > best.bits)) best = { id: b.id, bits: cidr.bits };
  }
  return best?.id ?? 0;
}

function identityOf(actor: Actor): number {
  if (actor === 'host') return IDENTITY_HOST;
  if (actor.startsWith('ip:')) {
    // The ipcache: longest CIDR identity containing the address, else world.
    const ip = parseIPv4(actor.slice(3));
    let best: { id: number; bits: number } | undefined;
    for (const c of CIDR_IDENTITIES) {
      const cidr = parseCidr(c.cidr!);
      if (cidrContains(cidr, ip) && (best === undefined || cidr.bits > best.bits)) best = { id: c.id, bits: cidr.bits };
    }
    return best?.id ?? IDENTITY_WORLD;
  }
  const pod = POD_LIST.find((p) => p.name === actor);
  if (pod === undefined) throw new Error(`unknown actor ${actor}`);
  return pod.identity;
}

/** The LPM trie answer for one identity: the matching entry with the longest prefix. */
export function lpm(entries: readonly PolicyEntry[], dir: Direction, identity: number, proto: number, port: number): PolicyEntry | undefined {
  let best: PolicyEntry | undefined;
  let bestLen = -2;
  for (const e of entries) {
    if (e.direction !== dir || e.identity !== identity) continue;
    let len: number;
    if (e.protocol === 0) len = -1;
    else if (e.protocol !== proto) continue;
    else {
      const shift = 16 - e.portPrefixLen;
      if (e.portPrefixLen > 0 && e.port >>> shift !== port >>> shift) continue;
      len = e.portPrefixLen;
    }
    if (len > bestLen) {
      best = e;
      bestLen = len;
    }
  }
  return best;
}

/** The datapath's verdict for one direction of one endpoint (@block: the remote address's ipBlock identity, 0 = none). */
export function allows(pol: EndpointPolicy, dir: Direction, remote: number, proto: number, port: number, block = 0): boolean {
  if (!pol[dir].enforced) return true;
  const hits = [lpm(pol.entries, dir, remote, proto, port), block === 0 ? undefined : lpm(pol.entries, dir, block, proto, port), lpm(pol.entries, dir, 0, proto, port)];
  if (hits.some((h) => h?.deny === true)) return false;
  return hits.some((h) => h !== undefined);
}

/** What the datapath does with a new connection in one direction (policy_can_access's pick among the identity's,
 *  the block's and any's longest matches: a deny, else the longest L4 prefix, the specific one on a tie): 'drop',
 *  'allow' (L4), or the HTTP rules the proxy applies. */
export function l7Verdict(pol: EndpointPolicy, dir: Direction, remote: number, proto: number, port: number): 'drop' | 'allow' | HttpRule[] {
  if (!pol[dir].enforced) return 'allow';
  const hits = [lpm(pol.entries, dir, remote, proto, port), lpm(pol.entries, dir, 0, proto, port)].filter((h) => h !== undefined);
  if (hits.length === 0 || hits.some((h) => h.deny)) return 'drop';
  const l4 = (e: PolicyEntry): number => (e.protocol === 0 ? 0 : 8 + e.portPrefixLen);
  const best = hits.length === 2 && l4(hits[1]!) > l4(hits[0]!) ? hits[1]! : hits[0]!;
  return best.http ?? 'allow';
}

export class Scenario {
  readonly compiled = new Map<string, EndpointPolicy>();
  readonly policies: Policy[];
  readonly blocks: IdentityInfo[];

  constructor(yamlOrPolicies: string | Policy[], mode: EnforcementMode = 'default') {
    this.policies = typeof yamlOrPolicies === 'string' ? parsePolicies(yamlOrPolicies, 'test.yaml') : yamlOrPolicies;
    this.blocks = ipBlockIdentities(this.policies);
    const compiler = new PolicyCompiler({ mode });
    compiler.setCluster(clusterView(POD_LIST, this.blocks));
    for (const p of POD_LIST) {
      const pol = compiler.compile(p, this.policies);
      checkInvariants(p.name, pol);
      this.compiled.set(p.name, pol);
    }
  }

  policy(pod: string): EndpointPolicy {
    const p = this.compiled.get(pod);
    if (p === undefined) throw new Error(`no pod ${pod}`);
    return p;
  }

  /** Whether from can open a connection to to:port/proto (egress of a pod source AND ingress of a pod destination). */
  reach(from: Actor, to: Actor, port: number, proto: ProbeProtocol = 'TCP'): boolean {
    const n = PROTO[proto];
    if (this.compiled.has(from) && !allows(this.policy(from), 'egress', identityOf(to), n, port, blockOf(to, this.blocks))) return false;
    if (this.compiled.has(to) && !allows(this.policy(to), 'ingress', identityOf(from), n, port, blockOf(from, this.blocks))) return false;
    return true;
  }

  /** What each side does with from -> to:port/TCP: the source's egress and the destination's ingress verdicts. */
  l7(from: Actor, to: Actor, port: number): { egress: ReturnType<typeof l7Verdict>; ingress: ReturnType<typeof l7Verdict> } {
    const none = { ingress: { enforced: false, defaultDeny: false }, egress: { enforced: false, defaultDeny: false }, entries: [] };
    return {
      egress: l7Verdict(this.compiled.get(from) ?? none, 'egress', identityOf(to), PROTO_TCP, port),
      ingress: l7Verdict(this.compiled.get(to) ?? none, 'ingress', identityOf(from), PROTO_TCP, port),
    };
  }

  /** Every pod->pod pair allowed on port/proto, as "x/a->y/b". */
  matrix(port: number, proto: ProbeProtocol = 'TCP', actors: readonly Actor[] = POD_LIST.map((p) => p.name)): string[] {
    const out: string[] = [];
    for (const from of actors) for (const to of actors) if (from !== to && this.reach(from, to, port, proto)) out.push(`${from}->${to}`);
    return out;
  }
}

/** All pod->pod pairs (from != to) for which expected(from, to) holds, in matrix() order. */
export function expectedMatrix(expected: (from: TestPod, to: TestPod) => boolean): string[] {
  const out: string[] = [];
  for (const from of POD_LIST) for (const to of POD_LIST) if (from !== to && expected(from, to)) out.push(`${from.name}->${to.name}`);
  return out;
}

/** What the map requires of every compiled policy: no duplicate keys, sorted, protocol 0 => prefix 0,
 *  prefix 0 => port 0, the port aligned to its prefix, no allow hidden under a deny of the same identity. */
export function checkInvariants(what: string, pol: EndpointPolicy): void {
  const seen = new Set<string>();
  let prev: PolicyEntry | undefined;
  for (const e of pol.entries) {
    const key = `${e.direction}/${e.identity}/${e.protocol}/${e.port}/${e.portPrefixLen}`;
    if (seen.has(key)) throw new Error(`${what}: duplicate entry ${key}`);
    seen.add(key);
    if (e.protocol === 0 && e.portPrefixLen !== 0) throw new Error(`${what}: ${key}: protocol 0 with a port prefix`);
    if (e.portPrefixLen === 0 && e.port !== 0) throw new Error(`${what}: ${key}: prefix 0 with a port`);
    if (e.portPrefixLen < 16 && e.port % 2 ** (16 - e.portPrefixLen) !== 0) throw new Error(`${what}: ${key}: port not aligned`);
    if (e.derivedFrom.length === 0) throw new Error(`${what}: ${key}: no derivedFrom`);
    if (prev !== undefined) {
      const order =
        (prev.direction === e.direction ? 0 : prev.direction === 'ingress' ? -1 : 1) ||
        prev.identity - e.identity ||
        prev.protocol - e.protocol ||
        prev.port - e.port ||
        prev.portPrefixLen - e.portPrefixLen;
      if (order >= 0) throw new Error(`${what}: entries not sorted at ${key}`);
    }
    prev = e;
  }
  const denies = new Map<string, PolicyEntry[]>();
  for (const d of pol.entries) if (d.deny) denies.set(`${d.direction}/${d.identity}`, [...(denies.get(`${d.direction}/${d.identity}`) ?? []), d]);
  for (const a of pol.entries) {
    if (a.deny) continue;
    for (const d of denies.get(`${a.direction}/${a.identity}`) ?? []) {
      const covered =
        d.protocol === 0 ||
        (d.protocol === a.protocol &&
          d.portPrefixLen <= a.portPrefixLen &&
          (d.portPrefixLen === 0 || d.port >>> (16 - d.portPrefixLen) === a.port >>> (16 - d.portPrefixLen)));
      if (covered) throw new Error(`${what}: allow ${JSON.stringify(a)} hidden under deny ${JSON.stringify(d)}`);
    }
  }
}
