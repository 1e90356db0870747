// The agent's CPU per datapath event, in one process, no kernel: decoding ring-buffer records into DatapathEvents
// (decodeEvent) and the flow server's ingest() of them with nobody following, against building every Hubble flow
// at once (toFlow() + publish(), what ingest() did before the lazy entries), and reading the kept flows back. The
// events are a TCP_CRR connection's (~10 per connection: 5 packets with new flags, each leaving one pod and
// entering the other) between two pods of the node, through a context shaped like the agent's (Map lookups).
// CPU time (process.cpuUsage) per event; medians of the rounds, interleaved.
//   node dist/bench/flow-ingest.js [--rounds 7] [--events 40000]
import { parseArgs } from 'node:util';
import { EVENT_HDR_LAYOUT, EVENT_HDR_SIZE, EVENT_RECORD_SIZE, EVENT_TYPE_TRACE, EVENT_VERSION, decodeEvent } from '../src/datapath/events.js';
import { OBS_POINTS } from '../src/datapath/event-types.js';
import { toFlow, type EndpointInfo, type FlowContext } from '../src/observe/flow.js';
import { ObserverServer } from '../src/observe/server.js';
import { tcpPacket } from '../src/observe/testing.js';
import type { DatapathEvent } from '../src/observe/types.js';
import { median } from './stats.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' }, events: { type: 'string', default: '40000' } } });
const rounds = Number(values.rounds);
const count = Number(values.events);

const CLIENT = { id: 1169, identity: 47080, namespace: 'default', podName: 'client-pod', labels: ['k8s:app=client', 'k8s:io.kubernetes.pod.namespace=default'] };
const SERVER = { id: 1234, identity: 47081, namespace: 'default', podName: 'server-pod', labels: ['k8s:app=server', 'k8s:io.kubernetes.pod.namespace=default'] };
const IPS: Record<string, EndpointInfo> = { '172.20.0.5': CLIENT, '172.20.0.9': SERVER };

/** A context like the agent's flowContext(): Map lookups, a view object per endpoint lookup. */
function agentLikeContext(): FlowContext {
  const byIp = new Map(Object.entries(IPS));
  const byId = new Map([CLIENT, SERVER].map((e) => [e.id, e]));
  const ids = new Map([CLIENT, SERVER].map((e) => [e.identity, e.labels]));
  const services = new Map([['10.96.0.10:80/TCP', { name: 'server', namespace: 'default' }]]);
  const ifnames = new Map([[7, 'lxc1169'], [8, 'lxc1234']]);
  const view = (e: EndpointInfo): EndpointInfo => ({ id: e.id, identity: e.identity, namespace: e.namespace, podName: e.podName, labels: e.labels });
  const offset = 1_754_463_026_228_000_000n;
  return {
    nodeName: 'bench-node',
    ktimeToWallNs: (k) => k + offset,
    ktimeToDate: (k) => new Date(Number((k + offset) / 1_000_000n)),
    endpointById: (id) => {
      const e = byId.get(id);
      return e ? view(e) : undefined;
    },
    endpointByIp: (ip) => {
      const e = byIp.get(ip);
      return e ? view(e) : undefined;
    },
    identityLabels: (id) => ids.get(id),
    serviceByAddr: (ip, port, protocol) => services.get(`${ip}:${port}/${protocol === 17 ? 'UDP' : 'TCP'}`),
    interfaceName: (i) => ifnames.get(i),
  };
}

/** The records of connection `c`: SYN, SYN-ACK, ACK, FIN-ACK both ways, each leaving one pod and entering the other. */
function connectionRecords(c: number, ktime: bigint): Buffer[] {
  const sport = 30000 + (c % 30000);
  const pkts: Array<[boolean, string, 'new' | 'reply' | 'established']> = [
    [false, 'SYN', 'new'],
    [true, 'SYN,ACK', 'reply'],
    [false, 'ACK', 'established'],
    [false, 'FIN,ACK', 'established'],
    [true, 'FIN,ACK', 'reply'],
  ];
  const out: Buffer[] = [];
  for (const [reply, flags, reason] of pkts) {
    const data = reply
      ? tcpPacket({ src: '172.20.0.9', dst: '172.20.0.5', sport: 80, dport: sport, flags })
      : tcpPacket({ src: '172.20.0.5', dst: '172.20.0.9', sport, dport: 80, flags });
    const [from, to] = reply ? [SERVER, CLIENT] : [CLIENT, SERVER];
    out.push(record('from-endpoint', from.id, 0, from.identity, 0, reply ? 8 : 7, reason, ktime++, data));
    out.push(record('to-endpoint', to.id, to.id, from.identity, to.identity, reply ? 7 : 8, reason, ktime++, data));
  }
  return out;
}

const REASONS = { new: 0, established: 1, reply: 2 } as const;
function record(obs: (typeof OBS_POINTS)[number], source: number, dstId: number, srcId: number, dstIdentity: number, ifindex: number, reason: keyof typeof REASONS, ktime: bigint, data: Buffer): Buffer {
  const L = EVENT_HDR_LAYOUT;
  const b = Buffer.alloc(EVENT_RECORD_SIZE);
  b[L.type[0]] = EVENT_TYPE_TRACE;
  b[L.subtype[0]] = OBS_POINTS.indexOf(obs);
  b.writeUInt16LE(source, L.source[0]);
  b.writeUInt32LE(data.length, L.len_orig[0]);
  b.writeUInt16LE(Math.min(data.length, EVENT_RECORD_SIZE - EVENT_HDR_SIZE), L.len_cap[0]);
  b[L.version[0]] = EVENT_VERSION;
  b[L.reason[0]] = REASONS[reason];
  b.writeUInt32LE(srcId, L.src_label[0]);
  b.writeUInt32LE(dstIdentity, L.dst_label[0]);
  b.writeUInt16LE(dstId, L.dst_id[0]);
  b.writeUInt32LE(ifindex, L.ifindex[0]);
  b.writeBigUInt64LE(ktime, L.ktime[0]);
  data.copy(b, EVENT_HDR_SIZE);
  return b;
}

const records: Buffer[] = [];
for (let c = 0; records.length < count; c++) records.push(...connectionRecords(c, BigInt(c) * 1_000_000n + 1_000_000_000n));
records.length = count;
const events = records.map((r) => decodeEvent(r)!);

/** CPU µs (user + system) of fn() per event. */
function cpuPerEvent(fn: () => void): number {
  const t = process.cpuUsage();
  fn();
  const d = process.cpuUsage(t);
  return (d.user + d.system) / count;
}

const server = (): ObserverServer => new ObserverServer({ nodeName: 'bench-node', socketPath: '/nonexistent/bench.sock', context: agentLikeContext() });
let sink = 0;
const ways: Record<string, () => number> = {
  // The ring-buffer callback's part: a copied record → DatapathEvent (the copy itself is the native binding's).
  decode: () =>
    cpuPerEvent(() => {
      for (const r of records) sink += decodeEvent(r as Buffer)!.capLen;
    }),
  // Before: every event a Hubble flow at once.
  'eager ingest': () => {
    const srv = server();
    const ctx = agentLikeContext();
    return cpuPerEvent(() => {
      for (const ev of events) srv.publish(toFlow(ev as DatapathEvent, ctx));
    });
  },
  // Now: ingest() keeps a compact entry, nobody reads.
  'ingest (nobody reads)': () => {
    const srv = server();
    return cpuPerEvent(() => {
      for (const ev of events) srv.ingest(ev as DatapathEvent);
    });
  },
  // Now, and every flow read once (what a follower without filters or a full GetFlows costs).
  'ingest + read every flow': () => {
    const srv = server();
    return cpuPerEvent(() => {
      for (const ev of events) sink += srv.ingest(ev as DatapathEvent).flow.uuid.length;
    });
  },
};

const res: Record<string, number[]> = {};
for (let round = 0; round <= rounds; round++) {
  for (const [name, way] of Object.entries(ways)) {
    const us = way();
    if (round > 0) (res[name] ??= []).push(us); // round 0 warms the JIT
  }
}
const base = median(res['eager ingest']!);
console.log(`flow ingest: ${count} CRR trace events per round, ${rounds} rounds (median CPU µs per event; load ${(await import('node:os')).loadavg()[0]!.toFixed(2)})`);
console.log('| way | µs/event | vs eager |');
console.log('|---|---:|---:|');
for (const [name, xs] of Object.entries(res)) console.log(`| ${name} | ${median(xs).toFixed(2)} | ${(median(xs) / base).toFixed(2)}x |`);
if (sink === 0) console.log('');
