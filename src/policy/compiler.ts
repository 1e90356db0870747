// Compiles normalized policies + the cluster's identities into the exact policy-map entries of one endpoint.
import { parseCidr, type Cidr } from '../util/ip.js';
import {
  IDENTITY_ANY,
  IDENTITY_HEALTH,
  IDENTITY_HOST,
  IDENTITY_INIT,
  IDENTITY_MIN_CLUSTER,
  IDENTITY_REMOTE_NODE,
  IDENTITY_UNMANAGED,
  IDENTITY_WORLD,
  LABEL_POD_NAMESPACE,
  indexLabels,
  labelValue,
  reservedIdentities,
  selectorMatches,
  type LabelIndex,
} from './identity.js';
import { policyKey } from './parse.js';
import { PROTO_ANY, PROTO_ICMP, blockContains, icmpBlock, portRangeBlocks, protocolNumber, protocolsOf } from './ports.js';
import type {
  ClusterView,
  Direction,
  EndpointPolicy,
  EndpointView,
  EnforcementMode,
  IdentityInfo,
  Peer,
  Policy,
  PolicyEntry,
  PolicyRule,
  PolicySpec,
  PortMatch,
  PortProtocol,
} from './types.js';

/** derivedFrom of the ingress allow for the local host, which Cilium adds whenever ingress is enforced
 *  (allow-localhost=always): the node's own health checks and kubelet probes must reach its pods. */
export const DERIVED_ALLOW_LOCALHOST = 'reserved:allow-localhost';

const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];
const NOT_ENFORCED = { enforced: false, defaultDeny: false } as const;
const MAX_CACHED_RESULTS = 10_000;

interface CidrIdentity {
  id: number;
  cidr: Cidr;
}

interface NamedPort {
  port: number;
  protocol: number;
}

/** What one rule compiles to, independently of the endpoint (cached per setCluster). */
interface RuleCache {
  /** Remote identities (0 = any), sorted, unique. */
  identities: number[];
  /** Packed entries (high, low pairs) from peers x numeric ports and egress named ports. */
  keys: number[];
  /** Ingress named ports: resolved against the subject endpoint at compile time. */
  namedIngress: Extract<PortMatch, { kind: 'named' }>[];
}

// An entry is packed into two small integers (V8 hashes and sorts those fast, unlike doubles):
// high = direction(1) | identity rank(22), where ranks follow identity order so keys sort in output order;
// low = protocol(8) | port(16) | prefixLen(5) | deny(1) = 30 bits.
const MAX_RANK = 2 ** 22;

function packLow(protocol: number, port: number, prefixLen: number, deny: boolean): number {
  return (protocol << 22) | (port << 6) | (prefixLen << 1) | (deny ? 1 : 0);
}

/** Collects packed entries, merging derivedFrom of identical ones. */
class Accumulator {
  readonly groups = new Map<number, Map<number, string | string[]>>();

  add(high: number, low: number, policy: string): void {
    let g = this.groups.get(high);
    if (g === undefined) {
      g = new Map();
      this.groups.set(high, g);
    }
    const d = g.get(low);
    if (d === undefined) g.set(low, policy);
    else if (typeof d === 'string') {
      if (d !== policy) g.set(low, [d, policy]);
    } else if (d[d.length - 1] !== policy) d.push(policy);
  }

  /** Drops every allow that a deny of the same identity and direction covers (the datapath's LPM returns
   *  the longest match within an identity, so such an allow would hide the deny), then sorts. */
  finish(identityOfRank: readonly number[]): PolicyEntry[] {
    const out: PolicyEntry[] = [];
    const highs = new Int32Array(this.groups.size);
    let n = 0;
    for (const h of this.groups.keys()) highs[n++] = h;
    highs.sort();
    const denies: number[] = [];
    // derivedFrom arrays are shared between entries of the same origin (entries are read-only).
    const single = new Map<string, string[]>();
    const derivedOf = (d: string | string[]): string[] => {
      if (typeof d !== 'string') return [...new Set(d)].sort();
      let a = single.get(d);
      if (a === undefined) {
        a = [d];
        single.set(d, a);
      }
      return a;
    };
    for (const high of highs) {
      const g = this.groups.get(high)!;
      const lows = [...g.keys()];
      if (lows.length > 1) lows.sort((a, b) => a - b);
      denies.length = 0;
      for (const low of lows) if ((low & 1) === 1) denies.push(low);
      const direction: Direction = high >= MAX_RANK ? 'egress' : 'ingress';
      const identity = identityOfRank[high % MAX_RANK]!;
      for (const low of lows) {
        if ((low & 1) === 0 && denies.length > 0 && denies.some((d) => covers(d, low))) continue;
        const d = g.get(low)!;
        out.push({
          direction,
          identity,
          protocol: (low >>> 22) & 0xff,
          port: (low >>> 6) & 0xffff,
          portPrefixLen: (low >>> 1) & 0x1f,
          deny: (low & 1) === 1,
          derivedFrom: derivedOf(d),
        });
      }
    }
    return out;
  }
}

/** Whether the deny covers the allow (both packLow values). */
function covers(deny: number, allow: number): boolean {
  const dProto = (deny >>> 22) & 0xff;
  if (dProto === PROTO_ANY) return true;
  if (dProto !== ((allow >>> 22) & 0xff)) return false;
  return blockContains((deny >>> 6) & 0xffff, (deny >>> 1) & 0x1f, (allow >>> 6) & 0xffff, (allow >>> 1) & 0x1f);
}

export function compareEntries(a: PolicyEntry, b: PolicyEntry): number {
  return (
    (a.direction === b.direction ? 0 : a.direction === 'ingress' ? -1 : 1) ||
    a.identity - b.identity ||
    a.protocol - b.protocol ||
    a.port - b.port ||
    a.portPrefixLen - b.portPrefixLen ||
    Number(a.deny) - Number(b.deny)
  );
}

function cidrInside(inner: Cidr, outer: Cidr): boolean {
  if (inner.bits < outer.bits) return false;
  const shift = 32 - outer.bits;
  return outer.bits === 0 || inner.base >>> shift === outer.base >>> shift;
}

function cidrOfIdentity(i: IdentityInfo): Cidr | undefined {
  const text = i.cidr ?? i.labels.find((l) => l.startsWith('cidr:'))?.slice(5);
  return text === undefined ? undefined : parseCidrOrUndefined(text);
}

function protocolMatches(rule: PortProtocol, proto: number): boolean {
  return rule === 'ANY' || protocolNumber(rule) === proto;
}

export class PolicyCompiler {
  readonly mode: EnforcementMode;
  private labels = new Map<number, LabelIndex>();
  /** Pod identities (>= 256, not CIDR), sorted. */
  private pods: number[] = [];
  /** Reserved identities (< 256), sorted. */
  private reserved: number[] = [];
  private cidrs: CidrIdentity[] = [];
  /** NetworkPolicy ipBlock identities (matched by address in the datapath). */
  private blocks: CidrIdentity[] = [];
  private namedByIdentity = new Map<number, Map<string, NamedPort[]>>();
  private namedAll = new Map<string, NamedPort[]>();
  private peerCache = new Map<string, number[]>();
  private ruleCache = new WeakMap<PolicyRule, RuleCache>();
  /** Every identity an entry can name, sorted, and its index there: packed keys hold the index so that
   *  they sort in identity order and fit 53 bits. */
  private identityOfRank: number[] = [];
  private rankOf = new Map<number, number>();
  /** Results by selection signature: replicas (and most endpoints) share them. Cleared by setCluster. */
  private results = new Map<string, EndpointPolicy>();
  private objectIds = new WeakMap<object, number>();
  private nextObjectId = 1;

  constructor(opts: { mode?: EnforcementMode } = {}) {
    this.mode = opts.mode ?? 'default';
    this.setCluster({ identities: [], endpoints: [] });
  }

  /** Replaces the cluster view (identities, endpoints' named ports); invalidates selector caches. */
  setCluster(view: ClusterView): void {
    this.labels = new Map();
    const pods: number[] = [];
    const reserved = new Set<number>();
    this.cidrs = [];
    this.blocks = [];
    // Reserved identities exist whether or not the view lists them.
    for (const i of [...reservedIdentities(), ...view.identities]) {
      if (i.ipBlock !== undefined) {
        const block = parseCidrOrUndefined(i.ipBlock);
        if (block !== undefined) this.blocks.push({ id: i.id, cidr: block });
        continue;
      }
      const cidr = cidrOfIdentity(i);
      if (cidr !== undefined) {
        this.cidrs.push({ id: i.id, cidr });
        continue;
      }
      this.labels.set(i.id, indexLabels(i.labels));
      if (i.id >= IDENTITY_MIN_CLUSTER) pods.push(i.id);
      else if (i.id > 0) reserved.add(i.id);
    }
    this.pods = [...new Set(pods)].sort((a, b) => a - b);
    this.reserved = [...reserved].sort((a, b) => a - b);
    this.namedByIdentity = new Map();
    this.namedAll = new Map();
    for (const ep of view.endpoints) {
      for (const np of ep.namedPorts) {
        const entry = { port: np.port, protocol: protocolNumber(np.protocol) };
        let byName = this.namedByIdentity.get(ep.identity);
        if (byName === undefined) {
          byName = new Map();
          this.namedByIdentity.set(ep.identity, byName);
        }
        pushUnique(byName, np.name, entry);
        pushUnique(this.namedAll, np.name, entry);
      }
    }
    this.identityOfRank = sortedUnique([IDENTITY_ANY, ...this.reserved, ...this.pods, ...this.cidrs.map((c) => c.id), ...this.blocks.map((c) => c.id), ...view.endpoints.map((e) => e.identity)]);
    if (this.identityOfRank.length > MAX_RANK) throw new RangeError(`Too many identities (${this.identityOfRank.length}); at most ${MAX_RANK}`);
    this.rankOf = new Map(this.identityOfRank.map((id, i) => [id, i]));
    this.peerCache = new Map();
    this.ruleCache = new WeakMap();
    this.results = new Map();
  }

  private objectId(o: object): number {
    let id = this.objectIds.get(o);
    if (id === undefined) {
      id = this.nextObjectId++;
      this.objectIds.set(o, id);
    }
    return id;
  }

  /** The high half of a packed entry (see packLow). */
  private packHigh(direction: Direction, identity: number): number {
    const rank = this.rankOf.get(identity);
    if (rank === undefined) throw new RangeError(`Identity ${identity} is not in the cluster view`);
    return (direction === 'egress' ? MAX_RANK : 0) + rank;
  }

  /** Whether policy p selects ep (its endpointSelector/podSelector). */
  selects(p: Policy, ep: Pick<EndpointView, 'namespace' | 'labels'>): boolean {
    if (p.namespace !== '' && p.namespace !== ep.namespace) return false;
    const idx = indexLabels(ep.labels);
    return p.specs.some((s) => selectorMatches(s.endpointSelector, idx));
  }

  /** Remote identities a peer stands for under the current cluster view (0 = any), sorted. */
  peerIdentities(peer: Peer): number[] {
    const key = JSON.stringify(peer);
    let ids = this.peerCache.get(key);
    if (ids === undefined) {
      ids = this.resolvePeer(peer);
      this.peerCache.set(key, ids);
    }
    return ids;
  }

  private resolvePeer(peer: Peer): number[] {
    switch (peer.type) {
      case 'any':
        return [IDENTITY_ANY];
      case 'entity':
        switch (peer.entity) {
          case 'all':
            return [IDENTITY_ANY];
          case 'world':
            return sortedUnique([IDENTITY_WORLD, ...this.cidrs.map((c) => c.id)]);
          case 'cluster':
            return sortedUnique([IDENTITY_HOST, IDENTITY_UNMANAGED, IDENTITY_HEALTH, IDENTITY_INIT, IDENTITY_REMOTE_NODE, ...this.pods]);
          case 'host':
            return [IDENTITY_HOST];
          case 'remote-node':
            return [IDENTITY_REMOTE_NODE];
          case 'health':
            return [IDENTITY_HEALTH];
          case 'init':
            return [IDENTITY_INIT];
          case 'unmanaged':
            return [IDENTITY_UNMANAGED];
          case 'none':
            return [];
        }
        return [];
      case 'ipBlock':
        // Exact by construction: the datapath finds the narrowest block or except named by any NetworkPolicy that
        // contains the address; it is inside the peer's block and outside its excepts iff the address is.
        return sortedUnique(this.blocks.filter((c) => cidrInside(c.cidr, parseCidr(peer.cidr)) && !peer.except.some((e) => cidrInside(c.cidr, parseCidr(e)))).map((c) => c.id));
      case 'cidr': {
        const block = parseCidr(peer.cidr);
        const except = peer.except.map((e) => parseCidr(e));
        const ids = this.cidrs.filter((c) => cidrInside(c.cidr, block) && !except.some((e) => cidrInside(c.cidr, e))).map((c) => c.id);
        // Addresses outside every known CIDR identity are "world"; only a block of everything covers them.
        if (block.bits === 0) ids.push(IDENTITY_WORLD);
        return sortedUnique(ids);
      }
      case 'endpoints': {
        const candidates = peer.includeReserved ? [...this.reserved, ...this.pods] : this.pods;
        const ids: number[] = [];
        for (const id of candidates) {
          const idx = this.labels.get(id);
          if (idx === undefined) continue;
          if (peer.namespace !== null && labelValue(idx, 'k8s', LABEL_POD_NAMESPACE) !== peer.namespace) continue;
          if (peer.namespaceSelector !== null) {
            // Namespace selectors only ever select pods.
            if (id < IDENTITY_MIN_CLUSTER || !selectorMatches(peer.namespaceSelector, idx)) continue;
          }
          if (selectorMatches(peer.selector, idx)) ids.push(id);
        }
        return ids;
      }
    }
  }

  private ruleOf(rule: PolicyRule): RuleCache {
    let rc = this.ruleCache.get(rule);
    if (rc !== undefined) return rc;
    const { direction, deny } = rule;
    const identities = rule.peers.length === 1 ? this.peerIdentities(rule.peers[0]!) : sortedUnique(rule.peers.flatMap((p) => this.peerIdentities(p)));
    const blocks: number[] = [];
    const keys: number[] = [];
    const namedIngress: Extract<PortMatch, { kind: 'named' }>[] = [];
    if (rule.ports.length === 0) blocks.push(PROTO_ANY, 0, 0);
    for (const pm of rule.ports) {
      if (pm.kind === 'all') {
        if (pm.protocol === 'ANY') blocks.push(PROTO_ANY, 0, 0);
        else blocks.push(protocolNumber(pm.protocol), 0, 0);
      } else if (pm.kind === 'icmp') {
        const b = icmpBlock(pm.type, pm.code);
        blocks.push(PROTO_ICMP, b.port, b.prefixLen);
      } else if (pm.kind === 'range') {
        const bs = portRangeBlocks(pm.from, pm.to);
        for (const proto of protocolsOf(pm.protocol)) for (const b of bs) blocks.push(proto, b.port, b.prefixLen);
      } else if (direction === 'ingress') {
        namedIngress.push(pm);
      } else {
        // Egress: the name means whatever port the destination identity's endpoints give it.
        for (const id of identities) {
          const found = id === IDENTITY_ANY ? this.namedAll.get(pm.name) : this.namedByIdentity.get(id)?.get(pm.name);
          for (const np of found ?? []) {
            if (protocolMatches(pm.protocol, np.protocol)) keys.push(this.packHigh(direction, id), packLow(np.protocol, np.port, 16, deny));
          }
        }
      }
    }
    const lows: number[] = [];
    for (let j = 0; j < blocks.length; j += 3) lows.push(packLow(blocks[j]!, blocks[j + 1]!, blocks[j + 2]!, deny));
    for (const id of identities) {
      const high = this.packHigh(direction, id);
      for (const low of lows) keys.push(high, low);
    }
    rc = { identities, keys, namedIngress };
    this.ruleCache.set(rule, rc);
    return rc;
  }

  private addRule(acc: Accumulator, rule: PolicyRule, key: string, ep: EndpointView): void {
    const rc = this.ruleOf(rule);
    const keys = rc.keys;
    for (let i = 0; i < keys.length; i += 2) acc.add(keys[i]!, keys[i + 1]!, key);
    for (const pm of rc.namedIngress) {
      // Ingress: the name is one of the subject endpoint's own container ports.
      for (const np of ep.namedPorts) {
        if (np.name !== pm.name) continue;
        const proto = protocolNumber(np.protocol);
        if (!protocolMatches(pm.protocol, proto)) continue;
        const low = packLow(proto, np.port, 16, rule.deny);
        for (const id of rc.identities) acc.add(this.packHigh(rule.direction, id), low, key);
      }
    }
  }

  /** The map entries and enforcement of one endpoint under `policies` (all of them; those not selecting
   *  the endpoint are skipped). Policies are treated as immutable values. The returned entry objects are
   *  shared between endpoints with the same selection and must not be modified (the entries array itself
   *  is the caller's); freezing them would cost more than compiling: a thousand replicas cost one compilation. */
  compile(ep: EndpointView, policies: readonly Policy[]): EndpointPolicy {
    if (this.mode === 'never') return { ingress: { ...NOT_ENFORCED }, egress: { ...NOT_ENFORCED }, entries: [] };
    const idx = indexLabels(ep.labels);
    const selected: [string, PolicySpec][] = [];
    let sig = '';
    let namedIngress = false;
    for (const p of policies) {
      if (p.namespace !== '' && p.namespace !== ep.namespace) continue;
      let key: string | undefined;
      for (const spec of p.specs) {
        if (!selectorMatches(spec.endpointSelector, idx)) continue;
        key ??= policyKey(p);
        selected.push([key, spec]);
        sig += `${this.objectId(p)}.${this.objectId(spec)},`;
        for (const rule of spec.rules) if (this.ruleOf(rule).namedIngress.length > 0) namedIngress = true;
      }
    }
    // Ingress named ports depend on the endpoint's own ports; nothing else depends on the endpoint.
    if (namedIngress) sig += `|${ep.namedPorts.map((n) => `${n.name}/${n.port}/${n.protocol}`).join(',')}`;
    let result = this.results.get(sig);
    if (result === undefined) {
      result = this.compileSelected(selected, ep);
      if (this.results.size >= MAX_CACHED_RESULTS) this.results.clear();
      this.results.set(sig, result);
    }
    return { ingress: { ...result.ingress }, egress: { ...result.egress }, entries: result.entries.slice() };
  }

  private compileSelected(selected: readonly [string, PolicySpec][], ep: EndpointView): EndpointPolicy {
    const always = this.mode === 'always';
    const enforced = { ingress: always, egress: always };
    const defaultDeny = { ingress: always, egress: always };
    const defaultAllowKeys = { ingress: new Set<string>(), egress: new Set<string>() };
    const acc = new Accumulator();
    for (const [key, spec] of selected) {
      for (const d of DIRECTIONS) {
        if (!spec.enforces[d]) continue;
        enforced[d] = true;
        if (spec.defaultDeny[d]) defaultDeny[d] = true;
        else defaultAllowKeys[d].add(key);
      }
      for (const rule of spec.rules) this.addRule(acc, rule, key, ep);
    }
    for (const d of DIRECTIONS) {
      // Cilium: a direction under policy only through enableDefaultDeny:false rules gets an allow-all entry,
      // so their denies apply and everything else still passes.
      if (enforced[d] && !defaultDeny[d]) {
        for (const k of [...defaultAllowKeys[d]].sort()) acc.add(this.packHigh(d, IDENTITY_ANY), packLow(PROTO_ANY, 0, 0, false), k);
      }
    }
    if (enforced.ingress) acc.add(this.packHigh('ingress', IDENTITY_HOST), packLow(PROTO_ANY, 0, 0, false), DERIVED_ALLOW_LOCALHOST);
    const entries = acc.finish(this.identityOfRank);
    return {
      ingress: { enforced: enforced.ingress, defaultDeny: enforced.ingress && defaultDeny.ingress },
      egress: { enforced: enforced.egress, defaultDeny: enforced.egress && defaultDeny.egress },
      entries,
    };
  }

  /** Every CIDR (cidr and except) the policies name, normalized ("10.0.0.0/8"), sorted by address then
   *  length, for CIDR identity allocation. 0.0.0.0/0 is left out: it is the world identity (2). */
  static cidrsOf(policies: readonly Policy[]): string[] {
    return prefixesOf(policies, 'cidr').filter((t) => t !== '0.0.0.0/0');
  }

  /** Every prefix (cidr and except) of the NetworkPolicy ipBlocks, sorted as cidrsOf(), 0.0.0.0/0 included: each gets
   *  an ipBlock identity and an entry in the datapath's ipBlock trie. */
  static ipBlocksOf(policies: readonly Policy[]): string[] {
    return prefixesOf(policies, 'ipBlock');
  }
}

function prefixesOf(policies: readonly Policy[], type: 'cidr' | 'ipBlock'): string[] {
  const found = new Map<string, Cidr>();
  for (const p of policies) {
    for (const s of p.specs) {
      for (const r of s.rules) {
        for (const peer of r.peers) {
          if (peer.type !== type) continue;
          for (const text of [peer.cidr, ...peer.except]) found.set(text, parseCidr(text));
        }
      }
    }
  }
  return [...found.entries()].sort(([, a], [, b]) => a.base - b.base || a.bits - b.bits).map(([t]) => t);
}

function parseCidrOrUndefined(text: string): Cidr | undefined {
  try {
    return parseCidr(text);
  } catch {
    return undefined;
  }
}

function pushUnique(m: Map<string, NamedPort[]>, name: string, np: NamedPort): void {
  const list = m.get(name);
  if (list === undefined) m.set(name, [np]);
  else if (!list.some((x) => x.port === np.port && x.protocol === np.protocol)) list.push(np);
}

function sortedUnique(ids: number[]): number[] {
  return [...new Set(ids)].sort((a, b) => a - b);
}
