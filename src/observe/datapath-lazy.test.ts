// The observer keeps datapath events compact and builds their Hubble flows only when read: while nobody reads, no
// flow is built (no UUID, no summary); a flow read later equals toFlow() of the same event as the node was at
// ingest (an endpoint, a service, a NAT entry gone meanwhile still show), and the build asks the node nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ObserverClient } from './client.js';
import { compileFilters, filtersOnly, type FlowFilter } from './filter.js';
import { toFlow, type FlowContext } from './flow.js';
import { DatapathEntry, SKELETON_FILTERS } from './flow-entry.js';
import { ObserverServer } from './server.js';
import { arpPacket, dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent, udpPacket, verdictEvent } from './testing.js';
import type { DatapathEvent } from './types.js';

const SEC = 1_000_000_000n;
const CURL = '172.20.2.179';
const NETSHOOT = '172.20.2.71';

/** Every kind of event toFlow() handles, and the lookups each makes. */
function events(): DatapathEvent[] {
  const syn = tcpPacket({ src: CURL, dst: NETSHOOT, sport: 43210, dport: 80, flags: 'SYN' });
  const truncated = syn.subarray(0, 14 + 20 + 10);
  const fragment = Buffer.from(udpPacket({ src: CURL, dst: '10.96.0.10', sport: 5353, dport: 53 }));
  fragment.writeUInt16BE(0x2000 | 3, 20); // MF, offset 3: no L4 header
  const sctp = Buffer.from(udpPacket({ src: CURL, dst: NETSHOOT, sport: 7, dport: 9 }));
  sctp[23] = 132;
  const ipv6 = Buffer.from(syn);
  ipv6.writeUInt16BE(0x86dd, 12);
  return [
    traceEvent({ data: syn, obsPoint: 'from-endpoint', reason: 'new', source: 1169, srcIdentity: 47080, ifindex: 7, ktimeNs: 1n * SEC }),
    traceEvent({ data: tcpPacket({ src: NETSHOOT, dst: CURL, sport: 80, dport: 43210, flags: 'SYN,ACK' }), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169, srcIdentity: 47080, dstIdentity: 47080, ifindex: 8, ktimeNs: 2n * SEC + 5n }),
    // A pod whose IP the node does not know (e.g. its address changed): named by the endpoint ID of the event.
    traceEvent({ data: tcpPacket({ src: '172.20.2.200', dst: '8.8.8.8', sport: 40000, dport: 443, flags: 'SYN' }), obsPoint: 'from-endpoint', source: 1234, srcIdentity: 47080, dstIdentity: 2, ifindex: 8, ktimeNs: 3n * SEC }),
    // Masqueraded on its way out: the NAT entry's source.
    traceEvent({ data: tcpPacket({ src: CURL, dst: '192.0.2.10', sport: 43211, dport: 443, flags: 'SYN' }), obsPoint: 'to-network', source: 1169, srcIdentity: 47080, dstIdentity: 2, ifindex: 3, ktimeNs: 4n * SEC }),
    traceEvent({ data: icmpPacket({ src: CURL, dst: '192.0.2.10', echoId: 99 }), obsPoint: 'to-network', source: 1169, srcIdentity: 47080, dstIdentity: 2, ifindex: 3, ktimeNs: 5n * SEC }),
    // To a ClusterIP (the service names the destination), and its reply from it.
    traceEvent({ data: udpPacket({ src: CURL, dst: '10.96.0.10', sport: 5353, dport: 53 }), obsPoint: 'from-endpoint', source: 1169, srcIdentity: 47080, ifindex: 7, ktimeNs: 6n * SEC }),
    traceEvent({ data: udpPacket({ src: '10.96.0.10', dst: CURL, sport: 53, dport: 5353 }), obsPoint: 'to-endpoint', reason: 'reply', dstId: 1169, dstIdentity: 47080, ifindex: 7, ktimeNs: 7n * SEC }),
    dropEvent({ data: tcpPacket({ src: '10.9.9.9', dst: NETSHOOT, sport: 5555, dport: 80, flags: 'SYN' }), reason: 133, line: 88, source: 1234, dstId: 1234, srcIdentity: 2, dstIdentity: 47080, ifindex: 7, ktimeNs: 8n * SEC }),
    dropEvent({ data: truncated, reason: 181, source: 1169, srcIdentity: 6, ktimeNs: 9n * SEC }),
    verdictEvent({ data: syn, direction: 'ingress', action: 'deny', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ktimeNs: 10n * SEC }),
    verdictEvent({ data: syn, direction: 'egress', action: 'audit', source: 1169, srcIdentity: 47080, dstIdentity: 9999, ktimeNs: 11n * SEC }),
    traceEvent({ data: fragment, obsPoint: 'from-endpoint', source: 1169, srcIdentity: 47080, ktimeNs: 12n * SEC }),
    traceEvent({ data: sctp, obsPoint: 'to-stack', source: 1169, srcIdentity: 47080, ktimeNs: 13n * SEC }),
    traceEvent({ data: ipv6, obsPoint: 'from-endpoint', source: 1169, srcIdentity: 47080, ktimeNs: 14n * SEC }),
    traceEvent({ data: arpPacket({ srcMac: 'a2:cc:fe:3f:b5:99', senderIp: CURL, targetIp: '172.20.2.1' }), obsPoint: 'from-endpoint', source: 1169, ifindex: 7, ktimeNs: 15n * SEC }),
    traceEvent({ data: Buffer.alloc(0), obsPoint: 'to-host', reason: 'unknown', ktimeNs: 16n * SEC }),
    // Into a pod whose IP the node does not know: named by the event's destination endpoint ID.
    traceEvent({ data: tcpPacket({ src: '10.9.9.9', dst: '172.20.2.201', sport: 5556, dport: 80, flags: 'SYN' }), obsPoint: 'to-endpoint', dstId: 1234, srcIdentity: 2, ifindex: 8, ktimeNs: 17n * SEC }),
  ];
}

/**
 * The node as a context: the seed's two pods, a ClusterIP service, a NAT entry, interface names. gone() empties it
 * (every pod, service, NAT entry and label removed, interfaces renamed); freeze() makes every lookup throw.
 */
function node(): { ctx: FlowContext; uuids: () => number; gone: () => void; freeze: () => void } {
  const base = fakeContext({ ifnames: { 3: 'eth0', 7: 'lxc1169', 8: 'lxc1234' } });
  let state: 'live' | 'gone' | 'frozen' = 'live';
  let uuids = 0;
  const ask = <T>(f: () => T, none: T): T => {
    if (state === 'frozen') throw new Error('the build asked the node');
    return state === 'gone' ? none : f();
  };
  const ctx: FlowContext = {
    nodeName: base.nodeName,
    ktimeToWallNs: (k) => ask(() => base.ktimeToWallNs!(k), base.ktimeToWallNs!(k) + 1n),
    ktimeToDate: (k) => ask(() => base.ktimeToDate(k), new Date(0)),
    endpointByIp: (ip) => ask(() => base.endpointByIp(ip), undefined),
    endpointById: (id) => ask(() => base.endpointById(id), undefined),
    identityLabels: (id) => ask(() => base.identityLabels(id), undefined),
    interfaceName: (i) => ask(() => base.interfaceName!(i), `renamed${i}`),
    serviceByAddr: (ip, port, proto) => ask(() => (ip === '10.96.0.10' && port === 53 && proto === 17 ? { name: 'kube-dns', namespace: 'kube-system' } : undefined), undefined),
    sourceXlated: (t) => ask(() => (t.dst === '192.0.2.10' && (t.sport === 43211 || t.sport === 99) ? '10.0.0.1' : undefined), undefined),
    uuid: () => (uuids++, base.uuid!()),
  };
  return { ctx, uuids: () => uuids, gone: () => (state = 'gone'), freeze: () => (state = 'frozen') };
}

test('datapath events with nobody reading: stored and counted, no flow built (no UUID)', () => {
  const n = node();
  const srv = new ObserverServer({ nodeName: 'ctr', socketPath: '/nonexistent/unused.sock', context: n.ctx });
  for (let i = 0; i < 20; i++) for (const ev of events()) srv.ingest(ev);
  assert.equal(n.uuids(), 0);
  assert.equal(srv.status().num_flows, 20 * events().length);
  assert.equal(srv.status().seen_flows, 20 * events().length);
});

test('a lazily built flow equals toFlow() of its event as the node was at ingest, built once, asking the node nothing', () => {
  const want = events().map((ev) => toFlow(ev, node().ctx));
  // toFlow() of a fresh node per event: each flow's UUID is the first of its sequence, so number them the same.
  const n = node();
  const srv = new ObserverServer({ nodeName: 'ctr', socketPath: '/nonexistent/unused.sock', context: n.ctx });
  const entries = events().map((ev) => srv.ingest(ev));
  n.freeze();
  const got = entries.map((e) => ({ ...e.flow, uuid: want[0]!.uuid }));
  assert.equal(n.uuids(), entries.length);
  assert.deepEqual(got, want);
  assert.equal(entries[0]!.flow, entries[0]!.flow);
  assert.equal(n.uuids(), entries.length);
  // What the cases cover: the fallbacks and context lookups toFlow() makes.
  assert.equal(got[2]!.source?.pod_name, 'netshoot-pod');
  assert.equal(got[3]!.IP?.source_xlated, '10.0.0.1');
  assert.equal(got[4]!.IP?.source_xlated, '10.0.0.1');
  assert.equal(got[5]!.destination_service?.name, 'kube-dns');
  assert.equal(got[6]!.source_service?.name, 'kube-dns');
  assert.deepEqual(got[7]!.source?.labels, ['reserved:world']);
  assert.equal(got[0]!.interface?.name, 'lxc1169');
  assert.equal(got[16]!.destination?.pod_name, 'netshoot-pod');
});

test('an endpoint, a service and a NAT entry removed after ingest still show in the flow read later', () => {
  const want = events().map((ev) => toFlow(ev, node().ctx));
  const n = node();
  const srv = new ObserverServer({ nodeName: 'ctr', socketPath: '/nonexistent/unused.sock', context: n.ctx });
  const entries = events().map((ev) => srv.ingest(ev));
  n.gone();
  const got = entries.map((e) => ({ ...e.flow, uuid: want[0]!.uuid }));
  assert.deepEqual(got, want);
  assert.equal(got[0]!.source?.pod_name, 'curl-pod');
  assert.equal(got[0]!.destination?.pod_name, 'netshoot-pod');
  // The same event ingested now: the node as it is.
  const now = srv.ingest(events()[0]!).flow;
  assert.equal(now.source?.pod_name, undefined);
  assert.equal(now.interface?.name, 'renamed7');
});

test('GetFlows and a filtered follower over the socket get the lazily kept flows, in order', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-dp-lazy-'));
  const n = node();
  const srv = new ObserverServer({ nodeName: 'ctr', socketPath: path.join(dir, 'o.sock'), context: n.ctx });
  await srv.start();
  const client = new ObserverClient(srv.socketPath);
  try {
    const evs = events();
    for (const ev of evs) srv.ingest(ev);
    assert.equal(n.uuids(), 0);
    const got = await client.collectFlows({ number: 100, whitelist: [{ verdict: ['DROPPED'] }] }, 10_000);
    const flows = got.flatMap((r) => (r.kind === 'flow' ? [r.flow] : []));
    assert.deepEqual(
      flows.map((f) => f.Summary),
      [7, 8, 9].map((i) => toFlow(evs[i]!, node().ctx).Summary),
    );
    assert.equal(flows[0]!.destination?.pod_name, 'netshoot-pod');
    // The verdict filter matched on the compact entries: only the three flows sent were built.
    assert.equal(n.uuids(), 3);
  } finally {
    client.close();
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('filters of the skeleton fields match an unbuilt entry as they match its flow', () => {
  const filters: FlowFilter[][] = [
    [{ verdict: ['FORWARDED'] }],
    [{ verdict: ['DROPPED', 'AUDIT'] }],
    [{ source_ip: [CURL] }, { destination_ip: ['10.96.0.0/16'] }],
    [{ source_pod: ['default/curl'] }],
    [{ destination_pod: ['netshoot'], verdict: ['DROPPED'] }],
    [{ source_label: ['reserved:world'] }],
    [{ destination_label: ['k8s:app=netshoot'] }],
    [{ source_identity: [47080] }],
    [{ destination_identity: [0, 2] }],
    [{ node_name: ['ctr'] }],
    [{ event_type: [{ type: 4 }] }],
    [{ event_type: [{ type: 1, match_sub_type: true, sub_type: 133 }] }],
  ];
  for (const f of filters) {
    assert.ok(filtersOnly(f, [], SKELETON_FILTERS), JSON.stringify(f));
    const match = compileFilters(f);
    const blackMatch = compileFilters([], f);
    events().forEach((ev, i) => {
      const e = new DatapathEntry(ev, node().ctx);
      const flow = toFlow(ev, node().ctx);
      assert.equal(match(e.skeleton()), match(flow), `${JSON.stringify(f)} on event ${i}`);
      assert.equal(blackMatch(e.skeleton()), blackMatch(flow), `blacklist ${JSON.stringify(f)} on event ${i}`);
    });
  }
  assert.equal(filtersOnly([{ verdict: ['DROPPED'], protocol: ['tcp'] }], [], SKELETON_FILTERS), false);
  assert.equal(filtersOnly([], [], SKELETON_FILTERS), false);
  assert.equal(filtersOnly([{ verdict: [] }], [{ http_path: [] }, { source_ip: ['1.2.3.4'] }], SKELETON_FILTERS), true);
});

test('a follower whose filters need the whole flow still gets the right flows', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-dp-lazy-'));
  const n = node();
  const srv = new ObserverServer({ nodeName: 'ctr', socketPath: path.join(dir, 'o.sock'), context: n.ctx });
  await srv.start();
  const client = new ObserverClient(srv.socketPath);
  try {
    const evs = events();
    for (const ev of evs) srv.ingest(ev);
    const got = await client.collectFlows({ number: 100, whitelist: [{ protocol: ['udp'], source_pod: ['curl'] }] }, 10_000);
    const flows = got.flatMap((r) => (r.kind === 'flow' ? [r.flow] : []));
    assert.deepEqual(
      flows.map((f) => f.Summary),
      [5].map((i) => toFlow(evs[i]!, node().ctx).Summary),
    );
  } finally {
    client.close();
    await srv.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
