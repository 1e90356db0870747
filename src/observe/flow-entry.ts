// A datapath event as the flow ring keeps it: the decoded event and what its flow needs from the node at that
// moment (the answers toFlow() would get from the FlowContext: endpoints, identity labels, services, the NAT
// source, the interface name), the Hubble flow built by toFlow() the first time something reads it, then kept.
// With nobody reading, an event costs the agent a header peek, a few map lookups and two small objects.
import { randomUUID } from 'node:crypto';
import { endpointOf, eventTypeOf, toFlow, verdictOf, type EndpointInfo, type FlowContext } from './flow.js';
import type { Flow } from './model.js';
import type { DatapathEvent } from './types.js';

type Service = { name: string; namespace: string } | undefined;

/**
 * What toFlow() asks the context for this event, asked now: each answer with the key it was asked with. The
 * packet fields are read as dissect() reads them (same bounds, same fragment and truncation rules), so the build
 * asks exactly these questions.
 */
export interface FlowSnapshot {
  readonly wallNs: bigint;
  /** IPv4 source and destination ('' without an IPv4 header). */
  readonly srcIp: string;
  readonly dstIp: string;
  /** TCP/UDP ports (0 otherwise), the keys of the service lookups. */
  readonly srcPort: number;
  readonly dstPort: number;
  /** Which of the by-ID and label lookups were asked (ASKED_*): an answer may be undefined. */
  readonly asked: number;
  readonly srcByIp: EndpointInfo | undefined;
  readonly dstByIp: EndpointInfo | undefined;
  /** endpointById() of the event's source / dstId, asked when the IP found none (as toFlow() does). */
  readonly srcById: EndpointInfo | undefined;
  readonly dstById: EndpointInfo | undefined;
  /** identityLabels() of the event's identities, for a side without an endpoint. */
  readonly srcLabels: string[] | undefined;
  readonly dstLabels: string[] | undefined;
  /** serviceByAddr() of source and destination (TCP, UDP). */
  readonly srcService: Service;
  readonly dstService: Service;
  /** sourceXlated() of a to-network trace. */
  readonly xlated: string | undefined;
  readonly ifname: string | undefined;
}

const ASKED_SRC_ID = 1;
const ASKED_DST_ID = 2;
const ASKED_SRC_LABELS = 4;
const ASKED_DST_LABELS = 8;

/** The L3/L4 fields toFlow()'s lookups use, or undefined for a packet without a complete IPv4 header. */
interface Keys {
  src: string;
  dst: string;
  /** 6 TCP, 17 UDP when that header was captured whole; 0 otherwise (no service lookup). */
  l4proto: number;
  proto: number;
  sport: number;
  dport: number;
}

/** As dissect(): Ethernet, IPv4 (20 bytes at least), then the first fragment's TCP (20) / UDP (8) / ICMP (8) header. */
function peek(data: Uint8Array): Keys | undefined {
  const n = data.length;
  if (n < 34 || data[12] !== 0x08 || data[13] !== 0x00) return undefined;
  const b = data;
  const src = ip4(b, 26);
  const dst = ip4(b, 30);
  const proto = b[23]!;
  const k: Keys = { src, dst, l4proto: 0, proto, sport: 0, dport: 0 };
  if (((b[20]! << 8) | b[21]!) & 0x1fff) return k;
  const l3len = n - 14;
  const hdrLen = Math.max(20, (b[14]! & 0x0f) * 4);
  const total = (b[16]! << 8) | b[17]!;
  const end = total >= 20 ? Math.min(l3len, total) : l3len;
  const start = Math.min(hdrLen, l3len);
  const l4len = Math.max(0, Math.min(Math.max(hdrLen, end), l3len) - start);
  const o = 14 + start;
  if (proto === 6 ? l4len >= 20 : proto === 17 && l4len >= 8) {
    k.l4proto = proto;
    k.sport = (b[o]! << 8) | b[o + 1]!;
    k.dport = (b[o + 2]! << 8) | b[o + 3]!;
  } else if (proto === 1 && l4len >= 8 && b[o] === 8) {
    // An echo request's id stands for the source port of the NAT lookup.
    k.sport = (b[o + 4]! << 8) | b[o + 5]!;
  }
  return k;
}

function ip4(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

/** Asks the context now what toFlow(ev) will ask it. */
export function snapshotFlow(ev: DatapathEvent, ctx: FlowContext): FlowSnapshot {
  const k = peek(ev.data);
  let asked = 0;
  const srcByIp = k ? ctx.endpointByIp(k.src) : undefined;
  const dstByIp = k ? ctx.endpointByIp(k.dst) : undefined;
  let srcById: EndpointInfo | undefined;
  let dstById: EndpointInfo | undefined;
  if (srcByIp === undefined && ev.type === 'trace' && ev.obsPoint === 'from-endpoint' && ev.source !== 0) {
    asked |= ASKED_SRC_ID;
    srcById = ctx.endpointById(ev.source);
  }
  if (dstByIp === undefined && ev.dstId !== 0) {
    asked |= ASKED_DST_ID;
    dstById = ctx.endpointById(ev.dstId);
  }
  // endpointOf(): an endpoint names its side; the event's identity otherwise.
  let srcLabels: string[] | undefined;
  let dstLabels: string[] | undefined;
  if ((srcByIp ?? srcById) === undefined && ev.srcIdentity !== 0) {
    asked |= ASKED_SRC_LABELS;
    srcLabels = ctx.identityLabels(ev.srcIdentity);
  }
  if ((dstByIp ?? dstById) === undefined && ev.dstIdentity !== 0) {
    asked |= ASKED_DST_LABELS;
    dstLabels = ctx.identityLabels(ev.dstIdentity);
  }
  let srcService: Service;
  let dstService: Service;
  const ports = k !== undefined && k.l4proto !== 0;
  if (ports && ctx.serviceByAddr) {
    srcService = ctx.serviceByAddr(k.src, k.sport, k.l4proto);
    dstService = ctx.serviceByAddr(k.dst, k.dport, k.l4proto);
  }
  const xlated =
    k !== undefined && ev.type === 'trace' && ev.obsPoint === 'to-network' && ctx.sourceXlated
      ? ctx.sourceXlated({ protocol: k.proto, src: k.src, sport: k.sport, dst: k.dst, dport: k.dport })
      : undefined;
  return {
    wallNs: ctx.ktimeToWallNs ? ctx.ktimeToWallNs(ev.ktimeNs) : BigInt(ctx.ktimeToDate(ev.ktimeNs).getTime()) * 1_000_000n,
    srcIp: k?.src ?? '',
    dstIp: k?.dst ?? '',
    srcPort: ports ? k.sport : 0,
    dstPort: ports ? k.dport : 0,
    asked,
    srcByIp,
    dstByIp,
    srcById,
    dstById,
    srcLabels,
    dstLabels,
    srcService,
    dstService,
    xlated,
    ifname: ev.ifindex !== 0 ? ctx.interfaceName?.(ev.ifindex) : undefined,
  };
}

/**
 * A context that answers toFlow() from a snapshot: every question toFlow() asks about the event has its answer
 * there (the node name and UUIDs come from the live context). A question it has none for, which toFlow() does
 * not ask, goes to the live context.
 */
class Replay implements FlowContext {
  readonly nodeName: string;
  constructor(
    private readonly ev: DatapathEvent,
    private readonly s: FlowSnapshot,
    private readonly live: FlowContext,
  ) {
    this.nodeName = live.nodeName;
  }
  ktimeToWallNs(): bigint {
    return this.s.wallNs;
  }
  ktimeToDate(): Date {
    return new Date(Number(this.s.wallNs / 1_000_000n));
  }
  endpointByIp(ip: string): EndpointInfo | undefined {
    const s = this.s;
    return ip === s.srcIp ? s.srcByIp : ip === s.dstIp ? s.dstByIp : this.live.endpointByIp(ip);
  }
  endpointById(id: number): EndpointInfo | undefined {
    const s = this.s;
    if (id === this.ev.source && s.asked & ASKED_SRC_ID) return s.srcById;
    if (id === this.ev.dstId && s.asked & ASKED_DST_ID) return s.dstById;
    return this.live.endpointById(id);
  }
  identityLabels(id: number): string[] | undefined {
    const s = this.s;
    if (id === this.ev.srcIdentity && s.asked & ASKED_SRC_LABELS) return s.srcLabels;
    if (id === this.ev.dstIdentity && s.asked & ASKED_DST_LABELS) return s.dstLabels;
    return this.live.identityLabels(id);
  }
  serviceByAddr(ip: string, port: number): Service {
    const s = this.s;
    return ip === s.srcIp && port === s.srcPort ? s.srcService : ip === s.dstIp && port === s.dstPort ? s.dstService : undefined;
  }
  sourceXlated(): string | undefined {
    return this.s.xlated;
  }
  interfaceName(): string | undefined {
    return this.s.ifname;
  }
  uuid(): string {
    return this.live.uuid ? this.live.uuid() : randomUUID();
  }
}

/** The FlowFilter fields DatapathEntry.skeleton() answers. */
export const SKELETON_FILTERS: ReadonlySet<string> = new Set([
  'verdict',
  'source_ip',
  'destination_ip',
  'source_pod',
  'destination_pod',
  'source_label',
  'destination_label',
  'source_identity',
  'destination_identity',
  'node_name',
  'event_type',
]);

/** One datapath flow of the ring: built (by toFlow(), from its snapshot) when first read. */
export class DatapathEntry {
  readonly ns: bigint;
  private built: Flow | undefined;
  private ev: DatapathEvent | undefined;
  private snap: FlowSnapshot | undefined;
  /** skeleton(), kept until the flow is built (several followers, repeated GetFlows). */
  private skel: Flow | undefined;
  constructor(
    ev: DatapathEvent,
    private readonly ctx: FlowContext,
  ) {
    this.ev = ev;
    this.snap = snapshotFlow(ev, ctx);
    this.ns = this.snap.wallNs;
  }

  /** The event (until the flow is built). */
  get event(): DatapathEvent | undefined {
    return this.ev;
  }

  get snapshot(): FlowSnapshot | undefined {
    return this.snap;
  }

  get isBuilt(): boolean {
    return this.built !== undefined;
  }

  /**
   * The fields of the flow a filter of SKELETON_FILTERS reads, as toFlow() makes them (zero values may stay that
   * the flow leaves out; the filters read them the same): for followers and GetFlows to skip what they will not
   * send without building it. The built flow once there is one.
   */
  skeleton(): Flow {
    if (this.built !== undefined) return this.built;
    if (this.skel !== undefined) return this.skel;
    const ev = this.ev!;
    const s = this.snap!;
    const r = new Replay(ev, s, this.ctx);
    const f = {
      verdict: verdictOf(ev),
      node_name: this.ctx.nodeName,
      event_type: eventTypeOf(ev),
      source: endpointOf(s.srcByIp ?? s.srcById, ev.srcIdentity, r),
      destination: endpointOf(s.dstByIp ?? s.dstById, ev.dstIdentity, r),
    } as Flow;
    if (s.srcIp !== '') f.IP = { source: s.srcIp, destination: s.dstIp };
    this.skel = f;
    return f;
  }

  get flow(): Flow {
    if (this.built === undefined) {
      this.built = toFlow(this.ev!, new Replay(this.ev!, this.snap!, this.ctx));
      this.ev = undefined;
      this.snap = undefined;
      this.skel = undefined;
    }
    return this.built;
  }
}
