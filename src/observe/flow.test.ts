import { test } from 'node:test';
import assert from 'node:assert/strict';
import { monotonicClock, normalizeFlow, toFlow } from './flow.js';
import { timeToNs } from './model.js';
import { arpPacket, dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent, verdictEvent } from './testing.js';

const ctx = fakeContext({ ifnames: { 7: 'lxc6bfc4c764fad' } });
const ping = icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71' });
const pong = icmpPacket({ src: '172.20.2.71', dst: '172.20.2.179', type: 0 });

test('toFlow() turns a to-endpoint trace into a Hubble flow with both endpoints named', () => {
  const f = toFlow(traceEvent({ data: ping, obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ifindex: 7, ktimeNs: 0n }), ctx);
  assert.deepEqual(f, {
    time: '2025-08-06T06:50:26.228Z',
    uuid: '00000000-0000-4000-8000-000000000001',
    verdict: 'FORWARDED',
    Type: 'L3_L4',
    node_name: 'ctr',
    event_type: { type: 4 },
    Summary: 'ICMPv4 EchoRequest',
    ethernet: { source: 'a2:cc:fe:3f:b5:99', destination: '0e:98:9e:22:60:65' },
    IP: { source: '172.20.2.179', destination: '172.20.2.71', ipVersion: 'IPv4' },
    l4: { ICMPv4: { type: 8 } },
    source: { ID: 1169, identity: 47080, namespace: 'default', labels: ['k8s:app=curl', 'k8s:io.kubernetes.pod.namespace=default'], pod_name: 'curl-pod' },
    destination: { ID: 1234, identity: 47080, namespace: 'default', labels: ['k8s:app=netshoot', 'k8s:io.kubernetes.pod.namespace=default'], pod_name: 'netshoot-pod' },
    traffic_direction: 'INGRESS',
    is_reply: false,
    trace_observation_point: 'TO_ENDPOINT',
    trace_reason: 'NEW',
    interface: { index: 7, name: 'lxc6bfc4c764fad' },
  });
});

test('toFlow() marks replies and derives the traffic direction as Hubble does', () => {
  const reply = toFlow(traceEvent({ data: pong, obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169, ktimeNs: 5n }), ctx);
  assert.equal(reply.is_reply, true);
  // The reply enters curl-pod, which opened the connection: the flow belongs to curl-pod's egress.
  assert.equal(reply.traffic_direction, 'EGRESS');
  const out = toFlow(traceEvent({ data: ping, obsPoint: 'from-endpoint', source: 1169, srcIdentity: 47080 }), ctx);
  assert.equal(out.traffic_direction, 'EGRESS');
  assert.equal(out.trace_observation_point, 'FROM_ENDPOINT');
  assert.deepEqual(out.event_type, { type: 4, sub_type: 5 });
  const unknown = toFlow(traceEvent({ data: ping, obsPoint: 'to-stack', reason: 'unknown', source: 1169 }), ctx);
  assert.equal(unknown.is_reply, undefined);
  assert.equal(unknown.traffic_direction, undefined);
  assert.equal(unknown.trace_reason, undefined, 'TRACE_REASON_UNKNOWN is the zero value and left out');
});

test('toFlow() names reserved identities of peers that are not local endpoints', () => {
  const f = toFlow(traceEvent({ data: icmpPacket({ src: '172.20.2.179', dst: '8.8.8.8' }), obsPoint: 'to-stack', source: 1169, srcIdentity: 47080, dstIdentity: 2 }), ctx);
  assert.deepEqual(f.destination, { identity: 2, labels: ['reserved:world'] });
  const h = toFlow(traceEvent({ data: icmpPacket({ src: '10.9.9.9', dst: '172.20.2.71' }), obsPoint: 'to-endpoint', dstId: 1234, srcIdentity: 4, dstIdentity: 47080 }), ctx);
  assert.deepEqual(h.source, { identity: 4, labels: ['reserved:health'] });
});

test('toFlow() turns a drop into a DROPPED flow with reason, file and line', () => {
  const syn = tcpPacket({ src: '172.20.2.179', dst: '172.20.2.71', sport: 43210, dport: 80, flags: 'SYN' });
  const f = toFlow(dropEvent({ data: syn, reason: 133, line: 1234, file: 'lxc', source: 1234, srcIdentity: 47080, dstIdentity: 47080, dstId: 1234 }), ctx);
  assert.equal(f.verdict, 'DROPPED');
  assert.equal(f.drop_reason, 133);
  assert.equal(f.drop_reason_desc, 'POLICY_DENIED');
  assert.deepEqual(f.event_type, { type: 1, sub_type: 133 });
  assert.deepEqual(f.file, { name: 'bpf_lxc.c', line: 1234 });
  assert.equal(f.traffic_direction, 'INGRESS');
  assert.equal(f.is_reply, undefined);
  assert.deepEqual(f.l4, { TCP: { source_port: 43210, destination_port: 80, flags: { SYN: true } } });
  assert.equal(f.Summary, 'TCP Flags: SYN');
  const egress = toFlow(dropEvent({ data: syn, reason: 181, source: 1169 }), ctx);
  assert.equal(egress.traffic_direction, 'EGRESS');
  assert.equal(egress.drop_reason_desc, 'POLICY_DENY');
});

test('toFlow() turns policy verdicts into FORWARDED / DROPPED / AUDIT flows with the match type', () => {
  const syn = tcpPacket({ src: '172.20.2.179', dst: '172.20.2.71', sport: 43210, dport: 80, flags: 'SYN' });
  const allow = toFlow(verdictEvent({ data: syn, direction: 'ingress', action: 'allow', match: 'L3-L4', source: 1234 }), ctx);
  assert.equal(allow.verdict, 'FORWARDED');
  assert.equal(allow.policy_match_type, 2);
  assert.equal(allow.traffic_direction, 'INGRESS');
  assert.equal(allow.is_reply, false);
  assert.deepEqual(allow.event_type, { type: 5 });
  const deny = toFlow(verdictEvent({ data: syn, direction: 'egress', action: 'deny', match: 'none', source: 1169 }), ctx);
  assert.equal(deny.verdict, 'DROPPED');
  assert.equal(deny.drop_reason_desc, 'POLICY_DENIED');
  assert.equal(deny.is_reply, undefined);
  assert.equal(deny.policy_match_type, undefined, 'match "none" is 0 and left out');
  assert.equal(toFlow(verdictEvent({ data: syn, direction: 'ingress', action: 'audit', match: 'all' }), ctx).verdict, 'AUDIT');
});

test('toFlow() keeps an ARP frame as an L2 flow', () => {
  const f = toFlow(traceEvent({ data: arpPacket({ srcMac: 'aa:bb:cc:dd:ee:ff', senderIp: '172.20.2.179', targetIp: '172.20.2.1' }), obsPoint: 'from-endpoint', source: 1169, reason: 'unknown' }), ctx);
  assert.equal(f.IP, undefined);
  assert.deepEqual(f.ethernet, { source: 'aa:bb:cc:dd:ee:ff', destination: 'ff:ff:ff:ff:ff:ff' });
  assert.equal(f.Summary, 'ARP Request who-has 172.20.2.1 tell 172.20.2.179');
  // No IP to look up: the from-endpoint source is found by its endpoint ID.
  assert.equal(f.source?.pod_name, 'curl-pod');
});

test('toFlow() keeps nanoseconds of the event time', () => {
  const f = toFlow(traceEvent({ data: ping, obsPoint: 'to-endpoint', ktimeNs: 123_456_789n }), ctx);
  assert.equal(f.time, '2025-08-06T06:50:26.351456789Z');
  assert.equal(timeToNs(f.time), 1_754_463_026_228_000_000n + 123_456_789n);
});

test('monotonicClock() maps hrtime to the wall clock', () => {
  const d0 = Date.now();
  const c = monotonicClock();
  const now = c.ktimeToDate(process.hrtime.bigint()).getTime();
  const d1 = Date.now();
  // The clock's offset is taken between d0 and d1, so the mapped time lies in [d0, d1] give or take that span
  // (however long a loaded machine made it) and a few ms of rounding and performance.timeOrigin drift.
  const slack = d1 - d0 + 5;
  assert.ok(now >= d0 - slack && now <= d1 + slack, `${now} vs [${d0}, ${d1}]`);
  assert.ok(c.ktimeToWallNs !== undefined);
});

test('normalizeFlow() drops zero values but keeps is_reply=false and set sub-messages', () => {
  const f = normalizeFlow({ time: 't', uuid: '', verdict: 'FORWARDED', Type: 'L3_L4', event_type: { type: 4, sub_type: 0 }, is_reply: false, source: { ID: 0, labels: [] }, Summary: '' });
  assert.deepEqual(f, { time: 't', verdict: 'FORWARDED', Type: 'L3_L4', event_type: { type: 4 }, is_reply: false, source: {} });
});
