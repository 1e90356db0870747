import { test } from 'node:test';
import assert from 'node:assert/strict';
import { formatMonitorEvent, fromMonitorEvent, monitorHeader, monitorJson, monitorMatches, MONITOR_SEPARATOR, toMonitorEvent, validateMonitorFilter } from './monitor-format.js';
import { dropEvent, icmpPacket, tcpPacket, traceEvent, verdictEvent } from './testing.js';

const ping = icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71' });
const toEp = traceEvent({ data: ping, obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ifindex: 7, hash: 0x4a0d6f68 });
const syn = tcpPacket({ src: '10.0.0.5', dst: '10.0.1.7', sport: 43210, dport: 80, flags: 'SYN' });

test('formatMonitorEvent() prints cilium monitor\'s one-line trace summary', () => {
  assert.equal(
    formatMonitorEvent(toEp, { ifname: 'lxc6bfc4c764fad' }),
    '-> endpoint 1234 flow 0x4a0d6f68 , identity 47080->47080 state new ifindex lxc6bfc4c764fad orig-ip 172.20.2.179: 172.20.2.179 -> 172.20.2.71 ICMPv4 EchoRequest\n',
  );
  const out = traceEvent({ data: syn, obsPoint: 'to-stack', source: 7, srcIdentity: 57814, dstIdentity: 2, ifindex: 3 });
  assert.equal(formatMonitorEvent(out), '-> stack flow 0x0 , identity 57814->world state new ifindex 3 orig-ip 10.0.0.5: 10.0.0.5:43210 -> 10.0.1.7:80 tcp SYN\n');
  assert.match(formatMonitorEvent(out, { numeric: true }), /identity 57814->2 /);
  const fromEp = traceEvent({ data: syn, obsPoint: 'from-endpoint', source: 7, reason: 'unknown' });
  assert.match(formatMonitorEvent(fromEp), /^<- endpoint 7 flow 0x0 , identity 0->0 state unknown /);
  assert.match(formatMonitorEvent(traceEvent({ data: syn, obsPoint: 'from-overlay' })), /^<- overlay /);
});

test('formatMonitorEvent() prints drops and policy verdicts as cilium monitor', () => {
  const drop = dropEvent({ data: syn, reason: 133, line: 1412, file: 'lxc', dstId: 12, ifindex: 8, srcIdentity: 2, dstIdentity: 57814, hash: 0xbeef });
  assert.equal(formatMonitorEvent(drop), 'xx drop (Policy denied) flow 0xbeef to endpoint 12, ifindex 8, file bpf_lxc.c:1412, , identity world->57814: 10.0.0.5:43210 -> 10.0.1.7:80 tcp SYN\n');
  const pv = verdictEvent({ data: syn, direction: 'ingress', action: 'deny', match: 'L3-L4', source: 12, srcIdentity: 2, dstIdentity: 57814, proto: 6, dport: 80 });
  assert.equal(
    formatMonitorEvent(pv),
    'Policy verdict log: flow 0x0 local EP ID 12, remote ID world, proto 6, ingress, action deny, auth: disabled, match L3-L4, 10.0.0.5:43210 -> 10.0.1.7:80 tcp SYN\n',
  );
});

test('formatMonitorEvent() -v prints the verbose header, -vv the layers first as in the seed', () => {
  const header = 'CPU 01: MARK 0x4a0d6f68 FROM 1234 to-endpoint: 98 bytes (98 captured), state new, interface lxc6bfc4c764fad, , identity 47080->47080, orig-ip 172.20.2.179, to endpoint 1234\n';
  assert.equal(formatMonitorEvent(toEp, { verbosity: 1, ifname: 'lxc6bfc4c764fad' }), header);
  const vv = formatMonitorEvent(toEp, { verbosity: 2, ifname: 'lxc6bfc4c764fad' }).split('\n');
  assert.equal(vv[0], MONITOR_SEPARATOR);
  assert.match(vv[1]!, /^Ethernet\t\{/);
  assert.match(vv[2]!, /^IPv4\t\{.* SrcIP=172\.20\.2\.179 DstIP=172\.20\.2\.71 /);
  assert.match(vv[3]!, /^ICMPv4\t\{.*TypeCode=EchoRequest/);
  assert.equal(vv[4] + '\n', header);
  const drop = dropEvent({ data: syn, reason: 181, source: 7, dstId: 0, srcIdentity: 57814, dstIdentity: 2, cpu: 3 });
  assert.equal(formatMonitorEvent(drop, { verbosity: 1 }), 'CPU 03: MARK 0x0 FROM 7 DROP: 74 bytes, reason Policy denied by denylist, , identity 57814->world\n');
});

test('monitorJson() has the fields of cilium monitor -j', () => {
  const j = monitorJson(toEp, { ifname: 'lxc1' });
  assert.deepEqual(Object.keys(j), ['cpu', 'type', 'mark', 'ifindex', 'state', 'observationPoint', 'traceSummary', 'source', 'bytes', 'srcLabel', 'dstLabel', 'dstID', 'summary']);
  assert.equal(j['traceSummary'], '-> endpoint 1234');
  assert.deepEqual((j['summary'] as Record<string, unknown>)['l3'], { src: '172.20.2.179', dst: '172.20.2.71' });
  const d = monitorJson(dropEvent({ data: syn, reason: 133, line: 5, file: 'host' }));
  assert.equal(d['reason'], 'Policy denied');
  assert.equal(d['File'], 'bpf_host.c');
  assert.deepEqual((d['summary'] as Record<string, unknown>)['l4'], { src: '43210', dst: '80' });
  assert.equal(JSON.parse(formatMonitorEvent(toEp, { json: true }))['type'], 'trace');
});

test('monitorMatches() applies --type, --related-to, --from and --to', () => {
  const drop = dropEvent({ data: syn, reason: 133, source: 5, dstId: 9 });
  assert.equal(monitorMatches(toEp, {}), true);
  assert.equal(monitorMatches(toEp, { types: ['drop'] }), false);
  assert.equal(monitorMatches(drop, { types: ['drop', 'trace'] }), true);
  assert.equal(monitorMatches(drop, { relatedTo: [9] }), true);
  assert.equal(monitorMatches(drop, { relatedTo: [5] }), true);
  assert.equal(monitorMatches(drop, { relatedTo: [1234] }), false);
  assert.equal(monitorMatches(drop, { from: [5] }), true);
  assert.equal(monitorMatches(drop, { from: [9] }), false);
  assert.equal(monitorMatches(drop, { to: [9] }), true);
  assert.throws(() => validateMonitorFilter({ types: ['bogus'] }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('toMonitorEvent() and fromMonitorEvent() round-trip every event type through JSON', () => {
  for (const ev of [toEp, dropEvent({ data: syn, reason: 133, line: 3, file: 'overlay' }), verdictEvent({ data: syn, direction: 'egress', action: 'audit', match: 'all', proto: 6, dport: 80 })]) {
    const m = JSON.parse(JSON.stringify(toMonitorEvent(ev, { ifname: 'lxc1', node: 'ctr' })));
    assert.equal(m.ifname, 'lxc1');
    assert.deepEqual(fromMonitorEvent(m), { ...ev, data: Buffer.from(ev.data) });
  }
  assert.equal(monitorHeader(2, 262144), 'Listening for events on 2 CPUs with 64x4096 of shared memory\nPress Ctrl-C to quit\n');
  assert.equal(monitorHeader(4), 'Listening for events on 4 CPUs\nPress Ctrl-C to quit\n');
});
