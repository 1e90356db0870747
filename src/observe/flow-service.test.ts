// Service names in flows (Hubble's source_service / destination_service): set from the agent's frontends, carried
// through the gRPC codec, and printed by `tendril observe` as Hubble's printer does ("namespace/service:port").
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type * as grpc from '@grpc/grpc-js';
import { toFlow } from './flow.js';
import { observerService, responseFromProto, responseToProto } from './codec.js';
import { compactLine } from './format.js';
import { fakeContext, tcpPacket, traceEvent, udpPacket } from './testing.js';

const VIP = '10.96.0.10';
const base = fakeContext();
const ctx = {
  ...base,
  serviceByAddr: (ip: string, port: number, protocol: number) =>
    ip === VIP && port === 80 && protocol === 6 ? { name: 'web', namespace: 'default' } : ip === VIP && port === 53 && protocol === 17 ? { name: 'dns', namespace: 'default' } : undefined,
};

test('a reply from a ClusterIP names the service as its source, a packet to one as its destination', () => {
  const reply = toFlow(traceEvent({ data: tcpPacket({ src: VIP, dst: '172.20.2.179', sport: 80, dport: 40000, flags: 'SA' }), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169 }), ctx);
  assert.deepEqual(reply.source_service, { name: 'web', namespace: 'default' });
  assert.equal(reply.destination_service, undefined);
  const to = toFlow(traceEvent({ data: udpPacket({ src: '172.20.2.179', dst: VIP, sport: 5353, dport: 53 }), obsPoint: 'from-endpoint', source: 1169 }), ctx);
  assert.deepEqual(to.destination_service, { name: 'dns', namespace: 'default' });
  assert.equal(to.source_service, undefined);
  // Another port of the ClusterIP, or TCP to the UDP port: no service.
  const other = toFlow(traceEvent({ data: tcpPacket({ src: '172.20.2.179', dst: VIP, sport: 5353, dport: 53, flags: 'S' }), obsPoint: 'from-endpoint', source: 1169 }), ctx);
  assert.equal(other.destination_service, undefined);
});

test('the service names survive the gRPC codec and show in compact output without a pod name', () => {
  const f = toFlow(traceEvent({ data: tcpPacket({ src: VIP, dst: '172.20.2.179', sport: 80, dport: 40000, flags: 'SA' }), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169 }), ctx);
  const m = observerService()['GetFlows'] as grpc.MethodDefinition<unknown, unknown>;
  const back = responseFromProto(m.responseDeserialize(m.responseSerialize(responseToProto({ kind: 'flow', flow: f, node_name: 'ctr', time: f.time }))) as Record<string, unknown>);
  assert.deepEqual(back, { kind: 'flow', flow: f, node_name: 'ctr', time: f.time });
  // A reply prints the other way round, as Hubble does.
  assert.match(compactLine(f), /default\/curl-pod:40000 .*<- default\/web:80 /);
});
