import { test } from 'node:test';
import assert from 'node:assert/strict';
import type * as grpc from '@grpc/grpc-js';
import { flowFromProto, flowToProto, nsToTimestamp, observerService, queryFromProto, queryToProto, responseFromProto, responseToProto, timestampToNs } from './codec.js';
import { toFlow } from './flow.js';
import { dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent } from './testing.js';

const ctx = fakeContext({ ifnames: { 7: 'lxc6bfc4c764fad' } });
const flow = toFlow(
  traceEvent({ data: icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71' }), obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ifindex: 7, ktimeNs: 987n }),
  ctx,
);

/** Field number → [wire type, raw value] of one protobuf message (varints as bigint, LEN fields as Buffer). */
function fields(buf: Buffer): Map<number, Array<[number, bigint | Buffer]>> {
  const out = new Map<number, Array<[number, bigint | Buffer]>>();
  let i = 0;
  const varint = (): bigint => {
    let v = 0n;
    let shift = 0n;
    for (;;) {
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
      shift += 7n;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const no = Number(key >> 3n);
    const wt = Number(key & 7n);
    let val: bigint | Buffer;
    if (wt === 0) val = varint();
    else if (wt === 2) {
      const len = Number(varint());
      val = buf.subarray(i, i + len);
      i += len;
    } else if (wt === 1) {
      val = buf.subarray(i, i + 8);
      i += 8;
    } else if (wt === 5) {
      val = buf.subarray(i, i + 4);
      i += 4;
    } else throw new Error(`unexpected wire type ${wt}`);
    out.set(no, [...(out.get(no) ?? []), [wt, val]]);
  }
  return out;
}

function method(name: string): grpc.MethodDefinition<unknown, unknown> {
  return observerService()[name] as grpc.MethodDefinition<unknown, unknown>;
}

test('a flow survives the real protobuf encoding unchanged', () => {
  const m = method('GetFlows');
  const bytes = m.responseSerialize(responseToProto({ kind: 'flow', flow, node_name: 'ctr', time: flow.time }));
  const back = responseFromProto(m.responseDeserialize(bytes) as Record<string, unknown>);
  assert.deepEqual(back, { kind: 'flow', flow, node_name: 'ctr', time: flow.time });
  const drop = toFlow(dropEvent({ data: tcpPacket({ src: '1.2.3.4', dst: '172.20.2.71', sport: 1, dport: 80, flags: 'SYN' }), reason: 133, line: 77, source: 1234 }), ctx);
  assert.deepEqual(flowFromProto((m.responseDeserialize(m.responseSerialize({ flow: flowToProto(drop) })) as Record<string, Record<string, unknown>>)['flow']!), drop);
});

test('flows use Hubble\'s field numbers on the wire', () => {
  const bytes = method('GetFlows').responseSerialize(responseToProto({ kind: 'flow', flow, node_name: 'ctr', time: flow.time }));
  const top = fields(bytes);
  assert.deepEqual([...top.keys()].sort((a, b) => a - b), [1, 1000, 1001], 'flow=1, node_name=1000, time=1001');
  const f = fields(top.get(1)![0]![1] as Buffer);
  const varint = (no: number): bigint => f.get(no)![0]![1] as bigint;
  const text = (no: number): string => (f.get(no)![0]![1] as Buffer).toString();
  assert.equal(varint(2), 1n, 'verdict FORWARDED');
  assert.equal(varint(10), 1n, 'Type L3_L4');
  assert.equal(varint(22), 1n, 'traffic_direction INGRESS');
  assert.equal(varint(24), 101n, 'trace_observation_point TO_ENDPOINT');
  assert.equal(varint(36), 1n, 'trace_reason NEW');
  assert.equal(text(11), 'ctr');
  assert.equal(text(34), flow.uuid);
  assert.equal(text(100000), 'ICMPv4 EchoRequest');
  for (const no of [1, 4, 5, 6, 8, 9, 19, 26, 28]) assert.ok(f.has(no), `field ${no} present`);
  const ip = fields(f.get(5)![0]![1] as Buffer);
  assert.equal((ip.get(1)![0]![1] as Buffer).toString(), '172.20.2.179');
  assert.equal(ip.get(3)![0]![1], 1n, 'ipVersion IPv4');
  const l4 = fields(f.get(6)![0]![1] as Buffer);
  assert.ok(l4.has(3), 'l4.ICMPv4 = 3');
  const src = fields(f.get(8)![0]![1] as Buffer);
  assert.equal(src.get(1)![0]![1], 1169n, 'Endpoint.ID = 1');
  assert.equal(src.get(2)![0]![1], 47080n, 'Endpoint.identity = 2');
  assert.equal((src.get(5)![0]![1] as Buffer).toString(), 'curl-pod', 'Endpoint.pod_name = 5');
  const reply = fields(f.get(26)![0]![1] as Buffer);
  // is_reply = BoolValue(false): the wrapper is present (false is known), its value false or absent.
  assert.equal(reply.get(1)?.[0]?.[1] ?? 0n, 0n);
});

test('GetFlowsRequest uses Hubble\'s field numbers and round-trips', () => {
  const m = method('GetFlows');
  const q = { number: 20, follow: true, first: false, whitelist: [{ source_pod: ['default/curl-pod'], verdict: ['DROPPED' as const] }], blacklist: [], since: 1_754_463_026_228_000_001n };
  const bytes = m.requestSerialize(queryToProto(q));
  const top = fields(bytes);
  assert.equal(top.get(1)![0]![1], 20n, 'number = 1');
  assert.equal(top.get(3)![0]![1], 1n, 'follow = 3');
  assert.ok(top.has(6), 'whitelist = 6');
  assert.ok(top.has(7), 'since = 7');
  const wl = fields(top.get(6)![0]![1] as Buffer);
  assert.equal((wl.get(2)![0]![1] as Buffer).toString(), 'default/curl-pod', 'FlowFilter.source_pod = 2');
  assert.deepEqual(queryFromProto(m.requestDeserialize(bytes) as Record<string, unknown>), q);
});

test('Timestamp conversions keep nanoseconds, also before 1970', () => {
  for (const ns of [0n, 1n, 1_754_463_026_228_123_456n, -1n, -1_500_000_000n]) assert.equal(timestampToNs(nsToTimestamp(ns)), ns);
  assert.deepEqual(nsToTimestamp(-1n), { seconds: '-1', nanos: 999_999_999 });
});
