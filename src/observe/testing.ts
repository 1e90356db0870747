// Crafted packets and synthetic datapath events for observe/ tests (unit and integration); no I/O.
import { parseIPv4, parseMac } from '../util/ip.js';
import type { DropEvent, ObsPoint, PolicyVerdictEvent, TraceEvent, TraceReason } from './types.js';
import type { EndpointInfo, FlowContext } from './flow.js';

function csum(b: Buffer): number {
  let s = 0;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2) s += b[b.length - 1]! << 8;
  while (s >> 16) s = (s & 0xffff) + (s >> 16);
  return ~s & 0xffff;
}

export interface PacketSpec {
  srcMac?: string;
  dstMac?: string;
  src: string;
  dst: string;
  ttl?: number;
  id?: number;
}

function ipv4(spec: PacketSpec, proto: number, l4: Buffer): Buffer {
  const eth = Buffer.alloc(14);
  parseMac(spec.dstMac ?? '0e:98:9e:22:60:65').copy(eth, 0);
  parseMac(spec.srcMac ?? 'a2:cc:fe:3f:b5:99').copy(eth, 6);
  eth.writeUInt16BE(0x0800, 12);
  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + l4.length, 2);
  ip.writeUInt16BE(spec.id ?? 36008, 4);
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = spec.ttl ?? 63;
  ip[9] = proto;
  ip.writeUInt32BE(parseIPv4(spec.src), 12);
  ip.writeUInt32BE(parseIPv4(spec.dst), 16);
  ip.writeUInt16BE(csum(ip), 10);
  return Buffer.concat([eth, ip, l4]);
}

/** ICMP echo request (type 8) or reply (type 0) with a 56-byte payload, like ping. */
export function icmpPacket(spec: PacketSpec & { type?: number; code?: number; echoId?: number; seq?: number }): Buffer {
  const icmp = Buffer.alloc(64);
  icmp[0] = spec.type ?? 8;
  icmp[1] = spec.code ?? 0;
  icmp.writeUInt16BE(spec.echoId ?? 54, 4);
  icmp.writeUInt16BE(spec.seq ?? 1, 6);
  icmp.writeUInt16BE(csum(icmp), 2);
  return ipv4(spec, 1, icmp);
}

export function tcpPacket(spec: PacketSpec & { sport: number; dport: number; flags: string; seq?: number; ack?: number; payload?: number }): Buffer {
  const opts = spec.flags.includes('SYN') ? Buffer.from([2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 0, 0x30, 0x39, 0, 0, 0, 0, 1, 3, 3, 7]) : Buffer.alloc(0);
  const tcp = Buffer.alloc(20 + opts.length + (spec.payload ?? 0));
  tcp.writeUInt16BE(spec.sport, 0);
  tcp.writeUInt16BE(spec.dport, 2);
  tcp.writeUInt32BE(spec.seq ?? 1000, 4);
  tcp.writeUInt32BE(spec.ack ?? 0, 8);
  tcp[12] = ((20 + opts.length) / 4) << 4;
  const bits: Record<string, number> = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32, ECE: 64, CWR: 128 };
  let fl = 0;
  for (const f of spec.flags.split(',').map((s) => s.trim()).filter(Boolean)) fl |= bits[f] ?? 0;
  tcp[13] = fl;
  tcp.writeUInt16BE(64240, 14);
  opts.copy(tcp, 20);
  return ipv4(spec, 6, tcp);
}

export function udpPacket(spec: PacketSpec & { sport: number; dport: number; payload?: number }): Buffer {
  const udp = Buffer.alloc(8 + (spec.payload ?? 0));
  udp.writeUInt16BE(spec.sport, 0);
  udp.writeUInt16BE(spec.dport, 2);
  udp.writeUInt16BE(udp.length, 4);
  return ipv4(spec, 17, udp);
}

/** ARP request "who-has target tell sender". */
export function arpPacket(spec: { srcMac: string; senderIp: string; targetIp: string; op?: number }): Buffer {
  const b = Buffer.alloc(42);
  parseMac('ff:ff:ff:ff:ff:ff').copy(b, 0);
  parseMac(spec.srcMac).copy(b, 6);
  b.writeUInt16BE(0x0806, 12);
  b.writeUInt16BE(1, 14);
  b.writeUInt16BE(0x0800, 16);
  b[18] = 6;
  b[19] = 4;
  b.writeUInt16BE(spec.op ?? 1, 20);
  parseMac(spec.srcMac).copy(b, 22);
  b.writeUInt32BE(parseIPv4(spec.senderIp), 28);
  b.writeUInt32BE(parseIPv4(spec.targetIp), 38);
  return b;
}

interface EventSpec {
  data: Buffer;
  ktimeNs?: bigint;
  cpu?: number;
  source?: number;
  hash?: number;
  ifindex?: number;
  srcIdentity?: number;
  dstIdentity?: number;
  dstId?: number;
}

function base(s: EventSpec): Omit<TraceEvent, 'type' | 'obsPoint' | 'reason'> {
  return {
    cpu: s.cpu ?? 1,
    ktimeNs: s.ktimeNs ?? 1_000_000_000n,
    source: s.source ?? 0,
    hash: s.hash ?? 0,
    origLen: s.data.length,
    capLen: Math.min(128, s.data.length),
    ifindex: s.ifindex ?? 0,
    srcIdentity: s.srcIdentity ?? 0,
    dstIdentity: s.dstIdentity ?? 0,
    dstId: s.dstId ?? 0,
    data: s.data.subarray(0, 128),
  };
}

export function traceEvent(s: EventSpec & { obsPoint: ObsPoint; reason?: TraceReason }): TraceEvent {
  return { ...base(s), origLen: s.data.length, type: 'trace', obsPoint: s.obsPoint, reason: s.reason ?? 'new' };
}

export function dropEvent(s: EventSpec & { reason: number; line?: number; file?: string }): DropEvent {
  return { ...base(s), type: 'drop', reason: s.reason, line: s.line ?? 0, file: s.file ?? 'lxc' };
}

export function verdictEvent(
  s: EventSpec & { direction: 'ingress' | 'egress'; action: 'allow' | 'deny' | 'audit'; match?: string; proto?: number; dport?: number },
): PolicyVerdictEvent {
  return { ...base(s), type: 'policy-verdict', direction: s.direction, action: s.action, match: s.match ?? 'L3-L4', proto: s.proto ?? 6, dport: s.dport ?? 0 };
}

/**
 * A FlowContext over a fixed endpoint table; ktime k maps to `epochNs + k`. The seed's pods by default:
 * curl-pod 172.20.2.179 (endpoint 1169) and netshoot-pod 172.20.2.71 (endpoint 1234), both identity 47080.
 */
export function fakeContext(opts: { nodeName?: string; epochNs?: bigint; endpoints?: Array<EndpointInfo & { ip: string }>; ifnames?: Record<number, string> } = {}): FlowContext {
  const eps = opts.endpoints ?? [
    { id: 1169, identity: 47080, namespace: 'default', podName: 'curl-pod', labels: ['k8s:app=curl', 'k8s:io.kubernetes.pod.namespace=default'], ip: '172.20.2.179' },
    { id: 1234, identity: 47080, namespace: 'default', podName: 'netshoot-pod', labels: ['k8s:app=netshoot', 'k8s:io.kubernetes.pod.namespace=default'], ip: '172.20.2.71' },
  ];
  const epoch = opts.epochNs ?? 1_754_463_026_228_000_000n; // 2025-08-06T06:50:26.228Z (seed's hubble line)
  let n = 0;
  return {
    nodeName: opts.nodeName ?? 'ctr',
    ktimeToWallNs: (k) => epoch + k,
    ktimeToDate: (k) => new Date(Number((epoch + k) / 1_000_000n)),
    endpointById: (id) => eps.find((e) => e.id === id),
    endpointByIp: (ip) => eps.find((e) => e.ip === ip),
    identityLabels: (id) => (id === 2 ? ['reserved:world'] : id === 1 ? ['reserved:host'] : id === 6 ? ['reserved:remote-node'] : eps.find((e) => e.identity === id)?.labels),
    interfaceName: (i) => opts.ifnames?.[i],
    uuid: () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`,
  };
}
