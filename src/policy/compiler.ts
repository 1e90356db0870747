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
import { mergeHttpRules } from './http.js';
import { PROTO_ANY, PROTO_ICMP, blockContains, icmpBlock, portRangeBlocks, protocolNumber, protocolsOf } from './ports.js';
import type {
  ClusterView,
  Direction,
  EndpointPolicy,
  EndpointView,
  EnforcementMode,
  HttpRule,
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

/** What the rules behind one allow entry say at L7: an L4-only rule among them (unfiltered), else their HTTP rules. */
interface L7Mark {
  l4: boolean;
  http: HttpRule[][];
}

/** Collects packed entries, merging derivedFrom of identical ones. */
class Accumulator {
  readonly groups = new Map<number, Map<number, string | string[]>>();
  /** Only filled when some selected rule has HTTP rules: "high,low" -> its L7 mark. */
  readonly l7 = new Map<string, L7Mark>();

  mark(high: number, low: number, http: HttpRule[] | undefined): void {
    const k = `${high},${low}`;
    let m = this.l7.get(k);
    if (m === undefined) {
      m = { l4: false, http: [] };
      this.l7.set(k, m);
    }
    if (http === undefined) m.l4 = true;
    else m.http.push(http);
  }

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
        const entry: PolicyEntry = {
          direction,
          identity,
          protocol: (low >>> 22) & 0xff,
          port: (low >>> 6) & 0xffff,
          portPrefixLen: (low >>> 1) & 0x1f,
          deny: (low & 1) === 1,
          derivedFrom: derivedOf(d),
        };
        const m = this.l7.size === 0 ? undefined : this.l7.get(`${high},${low}`);
        if (m !== undefined && !m.l4 && m.http.length > 0) entry.http = mergeHttpRules(...m.http);
        out.push(entry);
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

  /** l7: some selected rule has HTTP rules, so every allow must be marked L4 or L7. */
  private addRule(acc: Accumulator, rule: PolicyRule, key: string, ep: EndpointView, l7: boolean): void {
    const rc = this.ruleOf(rule);
    const keys = rc.keys;
    const mark = l7 && !rule.deny;
    for (let i = 0; i < keys.length; i += 2) {
      acc.add(keys[i]!, keys[i + 1]!, key);
      if (mark) acc.mark(keys[i]!, keys[i + 1]!, rule.http);
    }
    for (const pm of rc.namedIngress) {
      // Ingress: the name is one of the subject endpoint's own container ports.
      for (const np of ep.namedPorts) {
        if (np.name !== pm.name) continue;
        const proto = protocolNumber(np.protocol);
        if (!protocolMatches(pm.protocol, proto)) continue;
        const low = packLow(proto, np.port, 16, rule.deny);
        for (const id of rc.identities) {
          const high = this.packHigh(rule.direction, id);
          acc.add(high, low, key);
          if (mark) acc.mark(high, low, rule.http);
        }
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
    const l7 = selected.some(([, spec]) => spec.rules.some((r) => r.http !== undefined));
    for (const [key, spec] of selected) {
      for (const d of DIRECTIONS) {
        if (!spec.enforces[d]) continue;
        enforced[d] = true;
        if (spec.defaultDeny[d]) defaultDeny[d] = true;
        else defaultAllowKeys[d].add(key);
      }
      for (const rule of spec.rules) this.addRule(acc, rule, key, ep, l7);
    }
    for (const d of DIRECTIONS) {
      // Cilium: a direction under policy only through enableDefaultDeny:false rules gets an allow-all entry,
      // so their denies apply and everything else still passes.
      if (enforced[d] && !defaultDeny[d]) {
        for (const k of [...defaultAllowKeys[d]].sort()) acc.add(this.packHigh(d, IDENTITY_ANY), packLow(PROTO_ANY, 0, 0, false), k);
      }
    }
    if (enforced.ingress) acc.add(this.packHigh('ingress', IDENTITY_HOST), packLow(PROTO_ANY, 0, 0, false), DERIVED_ALLOW_LOCALHOST);
    const entries = l7 ? resolveL7(acc.finish(this.identityOfRank)) : acc.finish(this.identityOfRank);
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

/** Whether entry a's protocol and port block contain b's. */
function entryCovers(a: PolicyEntry, b: PolicyEntry): boolean {
  if (a.protocol === PROTO_ANY) return true;
  return a.protocol === b.protocol && blockContains(a.port, a.portPrefixLen, b.port, b.portPrefixLen);
}

/**
 * Cilium's L7 semantics on top of the datapath's lookup (the longest match of the remote identity and of "any",
 * the specific one on a tie): traffic of identity j on an L7 entry's ports is filtered by the union of the HTTP
 * rules of every allow of j or of any that covers those ports, and not at all if one of them is L4-only. Where the
 * lookup would pick an entry that says otherwise, an entry of j for exactly those ports is written (or the
 * existing one corrected), so the proxy sees j's traffic with j's rules and an L4 allow cancels L7 for its peer.
 */
function resolveL7(entries: PolicyEntry[]): PolicyEntry[] {
  const l7 = entries.filter((e) => e.http !== undefined);
  if (l7.length === 0) return entries;
  const byKey = new Map<string, PolicyEntry>();
  const keyOf = (e: Pick<PolicyEntry, 'direction' | 'identity' | 'protocol' | 'port' | 'portPrefixLen'>): string =>
    `${e.direction}/${e.identity}/${e.protocol}/${e.port}/${e.portPrefixLen}`;
  for (const e of entries) if (!e.deny) byKey.set(keyOf(e), e);
  const updates = new Map<string, PolicyEntry>();
  for (const target of l7) {
    const same = entries.filter((e) => e.direction === target.direction && entryCovers(e, target));
    const identities = target.identity === IDENTITY_ANY ? sortedUnique([IDENTITY_ANY, ...same.filter((e) => !e.deny).map((e) => e.identity)]) : [target.identity];
    for (const j of identities) {
      const mine = same.filter((e) => e.identity === j || e.identity === IDENTITY_ANY);
      if (mine.some((e) => e.deny)) continue; // a deny wins in the datapath whatever the allows say
      const allows = mine.filter((e) => !e.deny);
      const unfiltered = allows.some((e) => e.http === undefined);
      const k = keyOf({ ...target, identity: j });
      const derivedFrom = [...new Set(allows.flatMap((e) => e.derivedFrom))].sort();
      const next: PolicyEntry = { direction: target.direction, identity: j, protocol: target.protocol, port: target.port, portPrefixLen: target.portPrefixLen, deny: false, derivedFrom };
      if (!unfiltered) next.http = mergeHttpRules(...allows.map((e) => e.http!));
      updates.set(k, next);
    }
  }
  const out = entries.filter((e) => e.deny || !updates.has(keyOf(e)));
  out.push(...updates.values());
  return out.sort(compareEntries);
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
