import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileFilter, compileFilters, FilterBuilder, parseEventType, parseIdentity, parseSelector } from './filter.js';
import { toFlow } from './flow.js';
import type { Flow } from './model.js';
import { dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent, udpPacket, verdictEvent } from './testing.js';

const ctx = fakeContext({
  endpoints: [
    { id: 1169, identity: 47080, namespace: 'default', podName: 'curl-pod', labels: ['k8s:app=curl', 'k8s:io.kubernetes.pod.namespace=default'], ip: '172.20.2.179' },
    { id: 1234, identity: 41757, namespace: 'default', podName: 'netshoot-pod', labels: ['k8s:app=netshoot', 'k8s:io.kubernetes.pod.namespace=default'], ip: '172.20.2.71' },
    { id: 7, identity: 51000, namespace: 'kube-system', podName: 'coredns-abc', labels: ['k8s:k8s-app=kube-dns', 'k8s:io.kubernetes.pod.namespace=kube-system'], ip: '172.20.1.9' },
  ],
  ifnames: { 7: 'lxc1', 9: 'lxc2' },
});

// curl → netshoot ICMP (trace), curl → coredns UDP 53 (trace), netshoot → curl TCP reply, a drop to netshoot, a verdict.
const flows: Record<string, Flow> = {
  ping: toFlow(traceEvent({ data: icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71' }), obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 41757, ifindex: 9 }), ctx),
  dns: toFlow(traceEvent({ data: udpPacket({ src: '172.20.2.179', dst: '172.20.1.9', sport: 40000, dport: 53 }), obsPoint: 'to-overlay', source: 1169, srcIdentity: 47080, dstIdentity: 51000, ifindex: 7 }), { ...ctx, nodeName: 'w1' }),
  synack: toFlow(traceEvent({ data: tcpPacket({ src: '172.20.2.71', dst: '172.20.2.179', sport: 80, dport: 43210, flags: 'SYN,ACK' }), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169, srcIdentity: 41757, dstIdentity: 47080 }), ctx),
  drop: toFlow(dropEvent({ data: tcpPacket({ src: '10.9.9.9', dst: '172.20.2.71', sport: 5555, dport: 8080, flags: 'SYN' }), reason: 133, source: 1234, srcIdentity: 2, dstIdentity: 41757 }), { ...ctx, nodeName: 'w2' }),
  verdict: toFlow(verdictEvent({ data: tcpPacket({ src: '172.20.2.179', dst: '172.20.2.71', sport: 43210, dport: 80, flags: 'SYN' }), direction: 'ingress', action: 'allow', source: 1234, srcIdentity: 47080, dstIdentity: 41757 }), ctx),
};

/** Names of the sample flows that the built whitelist/blacklist let through. */
function pass(build: (b: FilterBuilder) => void): string[] {
  const b = new FilterBuilder();
  build(b);
  const { whitelist, blacklist } = b.build();
  const p = compileFilters(whitelist, blacklist);
  return Object.entries(flows)
    .filter(([, f]) => p(f))
    .map(([k]) => k);
}

test('--pod matches flows from or to the pod (prefix, namespace "default" when none is given)', () => {
  assert.deepEqual(pass((b) => b.apply('pod', 'netshoot')), ['ping', 'synack', 'drop', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('from-pod', 'curl-pod')), ['ping', 'dns', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('to-pod', 'default/curl')), ['synack']);
  assert.deepEqual(pass((b) => b.apply('to-pod', 'coredns')), [], 'coredns is not in "default"');
  assert.deepEqual(pass((b) => b.apply('to-pod', 'kube-system/coredns')), ['dns']);
});

test('--namespace matches flows from or to a namespace', () => {
  assert.deepEqual(pass((b) => b.apply('namespace', 'kube-system')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('from-namespace', 'kube-system')), []);
  assert.deepEqual(pass((b) => b.apply('to-namespace', 'kube-system')), ['dns']);
});

test('--label takes Kubernetes label selectors, with or without the label source', () => {
  assert.deepEqual(pass((b) => b.apply('label', 'app=curl')), ['ping', 'dns', 'synack', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('from-label', 'k8s:app=curl')), ['ping', 'dns', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('to-label', 'k8s-app in (kube-dns, foo)')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('from-label', 'reserved:world')), ['drop']);
  assert.deepEqual(pass((b) => b.apply('to-label', 'app!=netshoot,app')), ['synack']);
  assert.deepEqual(pass((b) => b.apply('to-label', '!app')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('to-label', 'app notin (netshoot)')), ['dns', 'synack']);
  assert.equal(parseSelector('io.kubernetes.pod.namespace=default')(['k8s:io.kubernetes.pod.namespace=default']), true);
  assert.throws(() => parseSelector('app in (a'), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('--ip takes addresses and CIDRs', () => {
  assert.deepEqual(pass((b) => b.apply('ip', '172.20.1.9')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('from-ip', '10.0.0.0/8')), ['drop']);
  assert.deepEqual(pass((b) => b.apply('to-ip', '172.20.2.0/24')), ['ping', 'synack', 'drop', 'verdict']);
  assert.throws(() => pass((b) => b.apply('ip', '300.1.1.1')), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('--port, --protocol, --identity, --verdict', () => {
  assert.deepEqual(pass((b) => b.apply('port', '53')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('to-port', '80')), ['verdict']);
  assert.deepEqual(pass((b) => b.apply('from-port', '80')), ['synack']);
  assert.deepEqual(pass((b) => b.apply('protocol', 'icmp')), ['ping']);
  assert.deepEqual(pass((b) => b.apply('protocol', 'UDP')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('protocol', 'tcp')), ['synack', 'drop', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('protocol', 'http')), [], 'no L7 flows');
  assert.deepEqual(pass((b) => b.apply('identity', '51000')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('from-identity', 'world')), ['drop']);
  assert.deepEqual(pass((b) => b.apply('verdict', 'dropped')), ['drop']);
  assert.deepEqual(pass((b) => { b.apply('verdict', 'FORWARDED'); b.apply('verdict', 'DROPPED'); }), ['ping', 'dns', 'synack', 'drop', 'verdict']);
  assert.throws(() => pass((b) => b.apply('port', '70000')), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.throws(() => pass((b) => b.apply('protocol', 'gopher')), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.throws(() => b0().apply('verdict', 'MAYBE'), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

function b0(): FilterBuilder {
  return new FilterBuilder();
}

test('--type, --node-name, --traffic-direction, --tcp-flags, --drop-reason-desc, --interface, --uuid', () => {
  assert.deepEqual(pass((b) => b.apply('type', 'trace')), ['ping', 'dns', 'synack']);
  assert.deepEqual(pass((b) => b.apply('type', 'trace:to-overlay')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('type', 'drop')), ['drop']);
  assert.deepEqual(pass((b) => b.apply('type', 'policy-verdict')), ['verdict']);
  assert.deepEqual(pass((b) => b.apply('node-name', 'w*')), ['dns', 'drop']);
  assert.deepEqual(pass((b) => b.apply('node-name', 'cluster/ctr')), ['ping', 'synack', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('traffic-direction', 'egress')), ['dns', 'synack']);
  assert.deepEqual(pass((b) => b.apply('tcp-flags', 'SYN')), ['synack', 'drop', 'verdict']);
  assert.deepEqual(pass((b) => b.apply('tcp-flags', 'syn,ack')), ['synack']);
  assert.deepEqual(pass((b) => b.apply('drop-reason-desc', 'POLICY_DENIED')), ['drop']);
  assert.deepEqual(pass((b) => b.apply('interface', 'lxc1')), ['dns']);
  assert.deepEqual(pass((b) => b.apply('interface', '9')), ['ping']);
  assert.deepEqual(pass((b) => b.apply('uuid', flows['drop']!.uuid)), ['drop']);
  assert.deepEqual(parseEventType('trace:to-endpoint'), { type: 4, match_sub_type: true, sub_type: 0 });
  assert.throws(() => parseEventType('trace:sideways'), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
  assert.equal(parseIdentity('reserved:host'), 1);
});

test('--not sends the next filter to the blacklist; filters AND inside, OR across', () => {
  assert.deepEqual(pass((b) => { b.not(); b.apply('protocol', 'tcp'); }), ['ping', 'dns']);
  assert.deepEqual(pass((b) => { b.apply('from-pod', 'curl-pod'); b.not(); b.apply('protocol', 'udp'); }), ['ping', 'verdict']);
  // Two fields in one filter: both must match.
  assert.deepEqual(pass((b) => { b.apply('from-pod', 'curl-pod'); b.apply('protocol', 'udp'); }), ['dns']);
  const { whitelist, blacklist } = (() => {
    const b = new FilterBuilder();
    b.apply('pod', 'curl-pod');
    b.apply('verdict', 'FORWARDED');
    return b.build();
  })();
  assert.deepEqual(whitelist, [
    { source_pod: ['default/curl-pod'], verdict: ['FORWARDED'] },
    { destination_pod: ['default/curl-pod'], verdict: ['FORWARDED'] },
  ]);
  assert.deepEqual(blacklist, []);
});

test('compileFilter() ignores nothing silently: DNS, service and HTTP fields match no flow', () => {
  assert.equal(compileFilter({ source_fqdn: ['example.com'] })(flows['dns']!), false);
  assert.equal(compileFilter({ http_method: ['GET'] })(flows['ping']!), false);
  assert.equal(compileFilters([], [{ destination_service: ['x'] }])(flows['ping']!), true, 'a blacklist on them excludes nothing');
  assert.equal(compileFilter({})(flows['ping']!), true);
  assert.equal(compileFilter({ reply: [true] })(flows['synack']!), true);
  assert.equal(compileFilter({ reply: [false] })(flows['drop']!), false, 'unknown reply-ness matches neither');
  assert.equal(compileFilter({ ip_version: ['IPv4'] })(flows['ping']!), true);
  assert.equal(compileFilter({ event_type: [{ type: 4, match_sub_type: true, sub_type: 0 }] })(flows['ping']!), true);
});
