// Writes the wanted services into the load-balancing maps as a diff against what this process wrote before (or,
// after a restart, what the maps held): service slots before the service entry, so the datapath never picks a
// slot that is not written yet; a frontend's removal deletes its service entry first.
import type { BpfMap, TypedMap } from '../kernel/bpf/index.js';
import { LbError } from './errors.js';
import { maglevTable } from './maglev.js';
import {
  IPPROTO_TCP,
  IPPROTO_UDP,
  LB4_BACKENDS_MAP,
  LB4_MAGLEV_MAP,
  LB4_REVERSE_NAT_MAP,
  LB4_SERVICES_MAP,
  LB4_SOURCE_RANGE_MAP,
  LB_F_AFFINITY,
  LB_F_EXT_LOCAL,
  LB_F_EXTERNAL,
  LB_F_MAGLEV,
  LB_F_SRC_RANGE,
  LB_SCOPE_ALL,
  LB_SCOPE_EXTERNAL,
  backendIdCodec,
  lb4BackendCodec,
  lb4KeyCodec,
  lb4MaglevKeyCodec,
  lb4ReverseNatCodec,
  lb4ServiceCodec,
  lb4SourceRangeKeyCodec,
  revNatIndexCodec,
  type Lb4Backend,
  type Lb4Key,
  type Lb4MaglevKey,
  type Lb4ReverseNat,
  type Lb4Service,
  type Lb4SourceRangeKey,
} from './maps.js';
import { u8 } from '../kernel/bpf/index.js';
import { formatCidr, parseCidr } from '../util/ip.js';

export type LbAlgorithm = 'random' | 'maglev';

/** One frontend (address, port, protocol) and the backends it spreads over. */
export interface Frontend {
  address: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  /** "namespace/name" of the service (for listings). */
  service: string;
  type: string;
  backends: { ip: string; port: number }[];
  /** Seconds of ClientIP affinity; undefined: none. */
  affinityTimeout?: number;
  /** LB_SCOPE_* of the entry (default LB_SCOPE_ALL); LB_SCOPE_EXTERNAL: a NodePort's backends for traffic from outside. */
  scope?: number;
  /** externalTrafficPolicy Local: traffic from outside takes the frontend's LB_SCOPE_EXTERNAL entry (LB_F_EXT_LOCAL). */
  extLocal?: boolean;
  /** Served to traffic from outside at its address (a LoadBalancer IP; LB_F_EXTERNAL). */
  external?: boolean;
  /** loadBalancerSourceRanges (CIDRs): clients from outside only from these (LB_F_SRC_RANGE); none or empty: any. */
  sourceRanges?: string[];
}

/** A backend that left the frontend whose service ID (rev_nat_index) is `revNatIndex`. */
export interface RemovedBackend {
  ip: string;
  port: number;
  /** IP protocol: 6 TCP, 17 UDP. */
  proto: number;
  revNatIndex: number;
}

export interface LbDatapathOptions {
  algorithm: LbAlgorithm;
  maglevTableSize: number;
}

function frontendKey(f: Pick<Frontend, 'address' | 'port' | 'protocol' | 'scope'>): string {
  return `${f.address}:${f.port}/${f.protocol}${f.scope ? `#${f.scope}` : ''}`;
}

function proto(p: 'TCP' | 'UDP'): number {
  return p === 'TCP' ? IPPROTO_TCP : IPPROTO_UDP;
}

interface Written {
  id: number;
  frontend: Frontend;
  /** Backend IDs in slot order. */
  ids: number[];
  /** Maglev table size written for it (0: none). */
  maglevSize: number;
  /** Source range CIDRs written for it (tendril_lb4_source_range). */
  ranges: string[];
  fingerprint: string;
}

export class LbDatapath {
  private readonly services: TypedMap<Lb4Key, Lb4Service>;
  private readonly backends: TypedMap<number, Lb4Backend>;
  private readonly revNat: TypedMap<number, Lb4ReverseNat>;
  private readonly maglev: TypedMap<Lb4MaglevKey, number>;
  private readonly ranges: TypedMap<Lb4SourceRangeKey, number>;
  private readonly opts: LbDatapathOptions;
  private readonly written = new Map<string, Written>();
  /** "ip:port/proto" -> backend ID, and the reverse. */
  private readonly backendIds = new Map<string, number>();
  private readonly backendKeys = new Map<number, string>();
  private readonly backendRefs = new Map<number, number>();
  private nextBackendId = 1;
  /**
   * (backend, service ID) pairs: a backend that left a frontend (or whose frontend went) since the last
   * takeRemovedBackends(). Socket LB destroys the sockets it connected to that backend through that frontend only.
   */
  private gone: RemovedBackend[] = [];
  private nextServiceId = 1;
  private readonly serviceIds = new Set<number>();

  constructor(map: (name: string) => BpfMap, opts: LbDatapathOptions) {
    this.services = map(LB4_SERVICES_MAP).typed(lb4KeyCodec, lb4ServiceCodec);
    this.backends = map(LB4_BACKENDS_MAP).typed(backendIdCodec, lb4BackendCodec);
    this.revNat = map(LB4_REVERSE_NAT_MAP).typed(revNatIndexCodec, lb4ReverseNatCodec);
    this.maglev = map(LB4_MAGLEV_MAP).typed(lb4MaglevKeyCodec, backendIdCodec);
    this.ranges = map(LB4_SOURCE_RANGE_MAP).typed(lb4SourceRangeKeyCodec, u8);
    this.opts = opts;
    this.adopt();
  }

  /** Takes over what an earlier agent run wrote, so live connections keep their backend and service IDs. */
  private adopt(): void {
    for (const [id, b] of this.backends.entries()) {
      this.backendIds.set(`${b.address}:${b.port}/${b.proto}`, id);
      this.backendKeys.set(id, `${b.address}:${b.port}/${b.proto}`);
      this.backendRefs.set(id, 0);
      this.nextBackendId = Math.max(this.nextBackendId, id + 1);
    }
    const slots = new Map<string, Map<number, number>>();
    const heads: [Lb4Key, Lb4Service][] = [];
    for (const [k, v] of this.services.entries()) {
      const fk = `${k.address}:${k.port}/${k.proto}#${k.scope}`;
      if (k.slot === 0) heads.push([k, v]);
      else (slots.get(fk) ?? slots.set(fk, new Map()).get(fk)!).set(k.slot, v.backendId);
    }
    const ranges = new Map<number, string[]>();
    for (const [k] of this.ranges.entries()) (ranges.get(k.revNatIndex) ?? ranges.set(k.revNatIndex, []).get(k.revNatIndex)!).push(k.cidr);
    for (const [k, v] of heads) {
      const protocol = k.proto === IPPROTO_UDP ? 'UDP' : 'TCP';
      const s = slots.get(`${k.address}:${k.port}/${k.proto}#${k.scope}`) ?? new Map<number, number>();
      const ids: number[] = [];
      for (let i = 1; i <= v.count; i++) ids.push(s.get(i) ?? 0);
      const frontend: Frontend = { address: k.address, port: k.port, protocol, service: '(earlier run)', type: '', backends: [], scope: k.scope };
      this.written.set(frontendKey(frontend), { id: v.revNatIndex, frontend, ids, maglevSize: v.flags & LB_F_MAGLEV ? v.maglevSize : 0, ranges: ranges.get(v.revNatIndex) ?? [], fingerprint: '' });
      ranges.delete(v.revNatIndex);
      this.serviceIds.add(v.revNatIndex);
      for (const id of ids) this.backendRefs.set(id, (this.backendRefs.get(id) ?? 0) + 1);
    }
    // Ranges of a service ID no frontend has: a later frontend given that ID must not inherit them.
    for (const [revNatIndex, cidrs] of ranges) for (const cidr of cidrs) this.ranges.delete({ revNatIndex, cidr });
  }

  private allocServiceId(): number {
    for (let n = 0; n < 0xffff; n++) {
      const id = this.nextServiceId;
      this.nextServiceId = (this.nextServiceId % 0xffff) + 1;
      if (!this.serviceIds.has(id)) {
        this.serviceIds.add(id);
        return id;
      }
    }
    throw new LbError('TENDRIL_ERR_LB_MAP_FULL', 'Cannot add a service frontend: all 65535 service IDs are in use');
  }

  private backendId(ip: string, port: number, p: number): number {
    const k = `${ip}:${port}/${p}`;
    let id = this.backendIds.get(k);
    if (id === undefined) {
      id = this.nextBackendId++;
      this.backends.put(id, { address: ip, port, proto: p, flags: 0 });
      this.backendIds.set(k, id);
      this.backendKeys.set(id, k);
      this.backendRefs.set(id, 0);
    }
    return id;
  }

  /** Backend `id` left the frontend of service ID `revNatIndex`. */
  private leave(id: number, revNatIndex: number): void {
    const m = /^(.*):(\d+)\/(\d+)$/.exec(this.backendKeys.get(id) ?? '');
    if (m) this.gone.push({ ip: m[1]!, port: Number(m[2]), proto: Number(m[3]), revNatIndex });
  }

  private release(id: number): void {
    const n = (this.backendRefs.get(id) ?? 1) - 1;
    this.backendRefs.set(id, n);
  }

  /** Deletes backends no frontend uses any more (their pinned connections then choose again). */
  private sweepBackends(): void {
    for (const [id, refs] of this.backendRefs) {
      if (refs > 0) continue;
      this.backends.delete(id);
      this.backendRefs.delete(id);
      const k = this.backendKeys.get(id);
      if (k !== undefined) this.backendIds.delete(k);
      this.backendKeys.delete(id);
    }
  }

  /** The (backend, frontend) pairs the syncs ended since the last call. */
  takeRemovedBackends(): RemovedBackend[] {
    const r = this.gone;
    this.gone = [];
    return r;
  }

  /** Makes the maps hold exactly `frontends`. Returns how many frontends were written and removed. */
  sync(frontends: readonly Frontend[]): { written: number; removed: number } {
    const want = new Map(frontends.map((f) => [frontendKey(f), f]));
    let written = 0;
    let removed = 0;
    for (const [k, w] of this.written) {
      if (want.has(k)) continue;
      this.removeFrontend(w);
      this.written.delete(k);
      removed++;
    }
    for (const [k, f] of want) {
      const fingerprint = JSON.stringify([f.backends, f.affinityTimeout ?? 0, this.opts.algorithm, f.extLocal ?? false, f.external ?? false, f.sourceRanges ?? []]);
      const prev = this.written.get(k);
      if (prev && prev.fingerprint === fingerprint) {
        prev.frontend = f;
        continue;
      }
      this.writeFrontend(f, prev, fingerprint);
      written++;
    }
    this.sweepBackends();
    return { written, removed };
  }

  private writeFrontend(f: Frontend, prev: Written | undefined, fingerprint: string): void {
    const p = proto(f.protocol);
    const id = prev?.id ?? this.allocServiceId();
    const ids = f.backends.map((b) => this.backendId(b.ip, b.port, p));
    for (const b of ids) this.backendRefs.set(b, (this.backendRefs.get(b) ?? 0) + 1);
    const key: Lb4Key = { address: f.address, port: f.port, slot: 0, proto: p, scope: f.scope ?? LB_SCOPE_ALL };
    ids.forEach((backendId, i) => this.services.put({ ...key, slot: i + 1 }, { backendId, count: 0, revNatIndex: id, flags: 0, maglevSize: 0, affinityTimeout: 0 }));
    let flags = 0;
    let maglevSize = 0;
    if (this.opts.algorithm === 'maglev' && ids.length > 0) {
      flags |= LB_F_MAGLEV;
      maglevSize = this.opts.maglevTableSize;
      const table = maglevTable(f.backends.map((b) => `${b.ip}:${b.port}`), maglevSize);
      table.forEach((bi, index) => this.maglev.put({ revNatIndex: id, index }, ids[bi]!));
    }
    if (f.affinityTimeout !== undefined) flags |= LB_F_AFFINITY;
    if (f.extLocal) flags |= LB_F_EXT_LOCAL;
    if (f.external) flags |= LB_F_EXTERNAL;
    // Ranges before the service entry that names them (LB_F_SRC_RANGE); stale ones after it.
    const ranges = [...new Set((f.sourceRanges ?? []).map((c) => formatCidr(parseCidr(c))))];
    for (const cidr of ranges) this.ranges.put({ revNatIndex: id, cidr }, 1);
    if (ranges.length > 0) flags |= LB_F_SRC_RANGE;
    this.revNat.put(id, { address: f.address, port: f.port });
    this.services.put(key, { backendId: 0, count: ids.length, revNatIndex: id, flags, maglevSize, affinityTimeout: f.affinityTimeout ?? 0 });
    if (prev) {
      const kept = new Set(ids);
      for (const b of new Set(prev.ids)) if (!kept.has(b)) this.leave(b, id);
      for (let s = ids.length + 1; s <= prev.ids.length; s++) this.services.delete({ ...key, slot: s });
      for (const b of prev.ids) this.release(b);
      if (prev.maglevSize > maglevSize) this.deleteMaglev(id, maglevSize, prev.maglevSize);
      for (const cidr of prev.ranges) if (!ranges.includes(cidr)) this.ranges.delete({ revNatIndex: id, cidr });
    }
    this.written.set(frontendKey(f), { id, frontend: f, ids, maglevSize, ranges, fingerprint });
  }

  private deleteMaglev(id: number, from: number, to: number): void {
    for (let index = from; index < to; index++) this.maglev.delete({ revNatIndex: id, index });
  }

  private removeFrontend(w: Written): void {
    const key: Lb4Key = { address: w.frontend.address, port: w.frontend.port, slot: 0, proto: proto(w.frontend.protocol), scope: w.frontend.scope ?? LB_SCOPE_ALL };
    this.services.delete(key);
    for (let s = 1; s <= w.ids.length; s++) this.services.delete({ ...key, slot: s });
    this.deleteMaglev(w.id, 0, w.maglevSize);
    for (const cidr of w.ranges) this.ranges.delete({ revNatIndex: w.id, cidr });
    this.revNat.delete(w.id);
    this.serviceIds.delete(w.id);
    for (const b of new Set(w.ids)) this.leave(b, w.id);
    for (const b of w.ids) this.release(b);
  }

  /** What the maps hold, per frontend (for `tendril service list` / `bpf lb list`). */
  list(): Array<{ id: number; frontend: string; service: string; type: string; backends: string[]; sourceRanges?: string[] }> {
    const out = [...this.written.values()].map((w) => ({
      id: w.id,
      frontend: `${w.frontend.address}:${w.frontend.port}/${w.frontend.protocol}${w.frontend.scope === LB_SCOPE_EXTERNAL ? ' (external)' : ''}`,
      service: w.frontend.service,
      type: w.frontend.type,
      backends: w.ids.map((id) => {
        const b = this.backends.lookup(id);
        return b ? `${b.address}:${b.port}/${b.proto === IPPROTO_UDP ? 'UDP' : 'TCP'}` : `(backend ${id} missing)`;
      }),
      ...(w.ranges.length > 0 ? { sourceRanges: [...w.ranges] } : {}),
    }));
    return out.sort((a, b) => a.id - b.id);
  }
}
