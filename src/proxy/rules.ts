// The L7 rule table the agent gives the proxy, and the choice of rules for one connection as the datapath made it.
import { HttpMatcher, type HttpRule } from '../policy/index.js';

/** One L7 entry of an endpoint's policy (an allow with HTTP rules). */
export interface L7Entry {
  /** Remote identity, 0 = any. */
  identity: number;
  port: number;
  portPrefixLen: number;
  http: HttpRule[];
}

/** An endpoint of this node with L7 entries. */
export interface ProxyEndpointRules {
  ip: string;
  identity: number;
  ingress: L7Entry[];
  egress: L7Entry[];
}

/** What the agent sends the proxy process on every change. */
export interface ProxyTable {
  endpoints: ProxyEndpointRules[];
  /** Address -> security identity (the ipcache's single addresses; others are world). */
  identities: [string, number][];
}

const IDENTITY_WORLD = 2;

/** Compiled form of a ProxyTable. */
export class ProxyRules {
  private readonly byIp = new Map<string, { ingress: L7Entry[]; egress: L7Entry[] }>();
  private readonly identities: Map<string, number>;
  private readonly matchers = new WeakMap<L7Entry, HttpMatcher>();

  constructor(table: ProxyTable) {
    for (const e of table.endpoints) this.byIp.set(e.ip, { ingress: e.ingress, egress: e.egress });
    this.identities = new Map(table.identities);
  }

  identityOf(ip: string): number {
    return this.identities.get(ip) ?? IDENTITY_WORLD;
  }

  /** The entry the datapath picked for remote identity `remote` on `port`: the longest port match of the identity,
   *  else of "any" (policy_can_access prefers the longer prefix; the compiler gave the identity its own entry
   *  wherever the two would disagree). */
  private pick(entries: readonly L7Entry[], remote: number, port: number): L7Entry | undefined {
    let best: L7Entry | undefined;
    for (const e of entries) {
      if (e.identity !== remote && e.identity !== 0) continue;
      const shift = 16 - e.portPrefixLen;
      if (e.portPrefixLen > 0 && e.port >>> shift !== port >>> shift) continue;
      if (best === undefined || e.portPrefixLen > best.portPrefixLen || (e.portPrefixLen === best.portPrefixLen && e.identity !== 0)) best = e;
    }
    return best;
  }

  private matcher(e: L7Entry): HttpMatcher {
    let m = this.matchers.get(e);
    if (m === undefined) {
      m = new HttpMatcher(e.http);
      this.matchers.set(e, m);
    }
    return m;
  }

  /** The rule sets a connection src -> dst:port must pass: the client's egress and the server's ingress, for
   *  those of them on this node with L7 rules for it; undefined when none covers it (refused). */
  forConnection(srcIp: string, dstIp: string, dstPort: number): { matchers: HttpMatcher[]; srcIdentity: number; dstIdentity: number; direction: 'INGRESS' | 'EGRESS' } | undefined {
    const srcIdentity = this.identityOf(srcIp);
    const dstIdentity = this.identityOf(dstIp);
    const matchers: HttpMatcher[] = [];
    const eg = this.byIp.get(srcIp);
    const eEntry = eg === undefined ? undefined : this.pick(eg.egress, dstIdentity, dstPort);
    if (eEntry) matchers.push(this.matcher(eEntry));
    const ing = this.byIp.get(dstIp);
    const iEntry = ing === undefined ? undefined : this.pick(ing.ingress, srcIdentity, dstPort);
    if (iEntry) matchers.push(this.matcher(iEntry));
    // Flows name the client's egress policy when it has one here, else the server's ingress.
    return matchers.length === 0 ? undefined : { matchers, srcIdentity, dstIdentity, direction: eEntry ? 'EGRESS' : 'INGRESS' };
  }
}
