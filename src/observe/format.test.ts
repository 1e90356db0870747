import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toFlow } from './flow.js';
import { compactLine, dictBlock, formatFlows, formatStampMilli, identityText, jsonLine } from './format.js';
import { dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent, verdictEvent } from './testing.js';

const ctx = fakeContext();
const seed = toFlow(
  traceEvent({ data: icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71' }), obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ktimeNs: 0n }),
  ctx,
);
const seedReply = toFlow(
  traceEvent({ data: icmpPacket({ src: '172.20.2.71', dst: '172.20.2.179', type: 0 }), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169, srcIdentity: 47080, dstIdentity: 47080, ktimeNs: 0n }),
  ctx,
);

test('compactLine() prints the seed\'s hubble observe lines exactly', () => {
  assert.equal(compactLine(seed, { utc: true }), 'Aug  6 06:50:26.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)');
  assert.equal(compactLine(seedReply, { utc: true }), 'Aug  6 06:50:26.228: default/curl-pod (ID:47080) <- default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoReply)');
});

test('compactLine() shows ports, reserved identities, <> for unknown direction, drop reasons and verdict types', () => {
  const drop = toFlow(dropEvent({ data: tcpPacket({ src: '10.9.9.9', dst: '172.20.2.71', sport: 5555, dport: 80, flags: 'SYN' }), reason: 133, source: 1234, srcIdentity: 2, dstIdentity: 47080, ktimeNs: 1_000_000n }), ctx);
  assert.equal(compactLine(drop, { utc: true }), 'Aug  6 06:50:26.229: 10.9.9.9:5555 (world) <> default/netshoot-pod:80 (ID:47080) Policy denied DROPPED (TCP Flags: SYN)');
  const pv = toFlow(verdictEvent({ data: tcpPacket({ src: '172.20.2.179', dst: '172.20.2.71', sport: 43210, dport: 80, flags: 'SYN' }), direction: 'ingress', action: 'allow', match: 'L3-L4', srcIdentity: 47080, dstIdentity: 47080 }), ctx);
  assert.equal(compactLine(pv, { utc: true }), 'Aug  6 06:50:27.228: default/curl-pod:43210 (ID:47080) -> default/netshoot-pod:80 (ID:47080) policy-verdict:L3-L4 INGRESS ALLOWED (TCP Flags: SYN)');
  const deny = toFlow(verdictEvent({ data: tcpPacket({ src: '172.20.2.179', dst: '172.20.2.71', sport: 43210, dport: 80, flags: 'SYN' }), direction: 'egress', action: 'deny', match: 'none' }), ctx);
  assert.match(compactLine(deny, { utc: true }), / <> .* policy-verdict:none EGRESS DENIED \(TCP Flags: SYN\)$/);
  assert.match(compactLine(seed, { utc: true, nodeName: true }), /^Aug {2}6 06:50:26\.228 \[ctr\]: default\/curl-pod/);
  assert.match(compactLine(seed, { utc: true, ipTranslation: false }), /: 172\.20\.2\.179 \(ID:47080\) -> 172\.20\.2\.71 /);
});

test('identityText() and formatStampMilli() follow Hubble', () => {
  assert.equal(identityText(1), '(host)');
  assert.equal(identityText(6), '(remote-node)');
  assert.equal(identityText(4), '(health)');
  assert.equal(identityText(0), '(ID:0)');
  assert.equal(identityText(57814), '(ID:57814)');
  assert.equal(formatStampMilli('2025-12-25T01:02:03.004005Z', true), 'Dec 25 01:02:03.004');
  assert.equal(formatStampMilli(undefined), 'N/A');
});

test('dictBlock(), table and json output', () => {
  assert.equal(
    dictBlock(seed, { utc: true }),
    ['  TIMESTAMP: Aug  6 06:50:26.228', '     SOURCE: default/curl-pod', 'DESTINATION: default/netshoot-pod', '       TYPE: to-endpoint', '    VERDICT: FORWARDED', '    SUMMARY: ICMPv4 EchoRequest'].join('\n'),
  );
  assert.equal(formatFlows([seed, seed], 'dict', { utc: true }).split('\n').filter((l) => l === '------------').length, 1);
  const table = formatFlows([seed, seedReply], 'table', { utc: true }).split('\n');
  assert.deepEqual(table, [
    'TIMESTAMP             SOURCE                 DESTINATION            TYPE          VERDICT     SUMMARY',
    'Aug  6 06:50:26.228   default/curl-pod       default/netshoot-pod   to-endpoint   FORWARDED   ICMPv4 EchoRequest',
    'Aug  6 06:50:26.228   default/netshoot-pod   default/curl-pod       to-endpoint   FORWARDED   ICMPv4 EchoReply',
    '',
  ]);
  const j = JSON.parse(jsonLine(seed)) as { flow: Record<string, unknown>; node_name: string; time: string };
  assert.equal(j.node_name, 'ctr');
  assert.equal(j.time, '2025-08-06T06:50:26.228Z');
  assert.deepEqual(Object.keys(j.flow).slice(0, 5), ['time', 'uuid', 'verdict', 'ethernet', 'IP']);
  assert.equal(j.flow['is_reply'], false);
  assert.equal(j.flow['trace_observation_point'], 'TO_ENDPOINT');
});
