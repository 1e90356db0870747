// Unit tests of the event record decoder and the trace-aggregation codecs, with the C/TS layout agreement from BTF.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Btf } from '../kernel/bpf/index.js';
import { OBS_POINTS } from './event-types.js';
import {
  EVENT_CAP_MAX,
  EVENT_FILES,
  EVENT_HDR_LAYOUT,
  EVENT_HDR_SIZE,
  EVENT_RECORD_SIZE,
  EVENT_TYPE_DROP,
  EVENT_TYPE_POLICY_VERDICT,
  EVENT_TYPE_TRACE,
  EVENT_VERSION,
  POLICY_MATCH_TYPES,
  TRACE_HOOK_FROM_CONTAINER,
  TRACE_HOOK_FROM_HOST,
  TRACE_HOOK_FROM_NETDEV,
  TRACE_HOOK_FROM_OVERLAY,
  TRACE_KEY_C_NAMES,
  TRACE_STATE_C_NAMES,
  decodeEvent,
  ktimeToDate,
  traceKeyCodec,
  traceStateCodec,
  type TraceKey,
} from './events.js';

// Compiled to dist/src/datapath/: the repository root is three levels up.
const root = fileURLToPath(new URL('../../../', import.meta.url));
const objects = ['build/bpf/lxc.o', 'build/bpf/host.o', 'build/bpf/overlay.o'];

type Field = keyof typeof EVENT_HDR_LAYOUT;

/** A record as the datapath writes it: header fields by C name, then packet bytes. */
function record(fields: Partial<Record<Field, number | bigint>>, data = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(EVENT_RECORD_SIZE);
  const all: Partial<Record<Field, number | bigint>> = { version: EVENT_VERSION, len_cap: data.length, ...fields };
  for (const [name, value] of Object.entries(all) as [Field, number | bigint][]) {
    const [off, size] = EVENT_HDR_LAYOUT[name];
    if (size === 8) b.writeBigUInt64LE(BigInt(value), off);
    else b.writeUIntLE(Number(value), off, size);
  }
  data.copy(b, EVENT_HDR_SIZE);
  return b;
}

const packet = Buffer.from(Array.from({ length: 200 }, (_, i) => i & 0xff));

test('decodeEvent() reads a trace with its observation point, reason, identities and packet bytes', () => {
  const e = decodeEvent(
    record(
      {
        type: EVENT_TYPE_TRACE,
        subtype: 5,
        source: 101,
        hash: 0xdeadbeef,
        len_orig: 200,
        reason: 2,
        src_label: 1001,
        dst_label: 0x00abcdef,
        dst_id: 102,
        cpu: 1,
        ifindex: 42,
        ktime: 123456789012345n,
      },
      packet.subarray(0, EVENT_CAP_MAX),
    ),
  );
  assert.deepEqual(e, {
    type: 'trace',
    cpu: 1,
    ktimeNs: 123456789012345n,
    source: 101,
    hash: 0xdeadbeef,
    origLen: 200,
    capLen: 128,
    ifindex: 42,
    srcIdentity: 1001,
    dstIdentity: 0x00abcdef,
    dstId: 102,
    data: packet.subarray(0, 128),
    obsPoint: 'from-endpoint',
    reason: 'reply',
  });
});

test('decodeEvent() maps every observation point and trace reason', () => {
  OBS_POINTS.forEach((name, i) => {
    const e = decodeEvent(record({ type: EVENT_TYPE_TRACE, subtype: i }));
    assert.equal(e?.type === 'trace' && e.obsPoint, name);
  });
  const reasons = [0, 1, 2, 3, 5].map((r) => {
    const e = decodeEvent(record({ type: EVENT_TYPE_TRACE, reason: r }));
    return e?.type === 'trace' ? e.reason : undefined;
  });
  assert.deepEqual(reasons, ['new', 'established', 'reply', 'related', 'unknown']);
});

test('decodeEvent() reads a drop: positive reason code, object and line', () => {
  const e = decodeEvent(record({ type: EVENT_TYPE_DROP, subtype: 132, source: 7, line: 321, file: 1, src_label: 1001, len_orig: 60 }, packet.subarray(0, 60)));
  assert.equal(e?.type, 'drop');
  if (e?.type !== 'drop') return;
  assert.deepEqual([e.reason, e.line, e.file, e.source, e.srcIdentity, e.capLen, e.origLen], [132, 321, 'lxc', 7, 1001, 60, 60]);
  assert.deepEqual(e.data, packet.subarray(0, 60));
  const unknownFile = decodeEvent(record({ type: EVENT_TYPE_DROP, subtype: 139, file: 99 }));
  assert.equal(unknownFile?.type === 'drop' && unknownFile.file, 'unknown');
});

test('decodeEvent() reads a policy verdict: direction, action, match type, protocol and port', () => {
  const e = decodeEvent(record({ type: EVENT_TYPE_POLICY_VERDICT, reason: 2, dir: 1, match: 2, proto: 6, dport: 8080, src_label: 2 }));
  assert.equal(e?.type, 'policy-verdict');
  if (e?.type !== 'policy-verdict') return;
  assert.deepEqual([e.direction, e.action, e.match, e.proto, e.dport, e.srcIdentity], ['ingress', 'deny', 'L3-L4', 6, 8080, 2]);
  const egressAllow = decodeEvent(record({ type: EVENT_TYPE_POLICY_VERDICT, reason: 1, dir: 2, match: 4 }));
  assert.deepEqual(egressAllow?.type === 'policy-verdict' && [egressAllow.direction, egressAllow.action, egressAllow.match], ['egress', 'allow', 'all']);
});

test('decodeEvent() skips records it cannot read instead of guessing', () => {
  assert.equal(decodeEvent(Buffer.alloc(10)), undefined, 'short');
  assert.equal(decodeEvent(record({ type: EVENT_TYPE_TRACE, version: EVENT_VERSION + 1 })), undefined, 'newer version');
  assert.equal(decodeEvent(record({ type: 99 })), undefined, 'unknown type');
  assert.equal(decodeEvent(record({ type: EVENT_TYPE_TRACE, subtype: OBS_POINTS.length })), undefined, 'unknown point');
  assert.equal(decodeEvent(record({ type: EVENT_TYPE_POLICY_VERDICT, reason: 1, dir: 0 })), undefined, 'no direction');
});

test('decodeEvent() never reads past the record for a bogus len_cap', () => {
  const rec = record({ type: EVENT_TYPE_TRACE }, packet.subarray(0, 10)).subarray(0, EVENT_HDR_SIZE + 10);
  rec.writeUInt16LE(500, EVENT_HDR_LAYOUT.len_cap[0]);
  const e = decodeEvent(rec);
  assert.equal(e?.capLen, 10);
  assert.equal(e?.data.length, 10);
});

test('ktimeToDate() converts CLOCK_MONOTONIC nanoseconds to wall-clock time', () => {
  // Each conversion lies between the Date.now() reads around it, give or take their span (however long a loaded
  // machine made it) and a millisecond of rounding.
  const d0 = Date.now();
  const now = ktimeToDate(process.hrtime.bigint()).getTime();
  const earlier = ktimeToDate(process.hrtime.bigint() - 5_000_000_000n).getTime();
  const d1 = Date.now();
  const slack = d1 - d0 + 2;
  assert.ok(now >= d0 - slack && now <= d1 + slack, `${now} vs [${d0}, ${d1}]`);
  assert.ok(earlier >= d0 - 5000 - slack && earlier <= d1 - 5000 + slack, `${earlier} vs [${d0}, ${d1}] - 5 s`);
});

test('traceKeyCodec puts addresses and ports in network order at the C offsets', () => {
  const k: TraceKey = { saddr: '10.200.0.10', daddr: '10.200.0.20', sport: 40000, dport: 80, proto: 6, hook: 1, pad: 0 };
  const b = traceKeyCodec.encode(k);
  assert.deepEqual([...b], [10, 200, 0, 10, 10, 200, 0, 20, 0x9c, 0x40, 0, 80, 6, 1, 0, 0]);
  assert.deepEqual(traceKeyCodec.decode(b), k);
  const s = traceStateCodec.encode({ lastReport: 0x0102030405060708n, tcpFlags: 0x12, reply: 1 });
  assert.deepEqual([...s.subarray(0, 10)], [8, 7, 6, 5, 4, 3, 2, 1, 0x12, 1]);
});

function btfMembers(layout: { members: { name: string; offset: number; size: number }[] }, skip: string[] = []): { name: string; offset: number; size: number }[] {
  return layout.members.filter((m) => !skip.includes(m.name)).map((m) => ({ name: m.name, offset: m.offset, size: m.size }));
}

for (const obj of objects) {
  test(`struct event_hdr and event_record in ${obj} match EVENT_HDR_LAYOUT (BTF)`, () => {
    const btf = Btf.fromFile(root + obj);
    const hdr = btf.struct('event_hdr');
    assert.equal(hdr.size, EVENT_HDR_SIZE);
    const fromTs = Object.entries(EVENT_HDR_LAYOUT)
      .map(([name, [offset, size]]) => ({ name, offset, size }))
      .sort((a, b) => a.offset - b.offset);
    assert.deepEqual(btfMembers(hdr), fromTs);
    const rec = btf.struct('event_record');
    assert.equal(rec.size, EVENT_RECORD_SIZE);
    assert.deepEqual(btfMembers(rec), [
      { name: 'hdr', offset: 0, size: EVENT_HDR_SIZE },
      { name: 'data', offset: EVENT_HDR_SIZE, size: EVENT_CAP_MAX },
    ]);
  });

  test(`struct trace_key and trace_state in ${obj} match the codecs (BTF)`, () => {
    const btf = Btf.fromFile(root + obj);
    const cases = [
      { struct: 'trace_key', codec: traceKeyCodec, names: TRACE_KEY_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'trace_state', codec: traceStateCodec, names: TRACE_STATE_C_NAMES as Readonly<Record<string, string>> },
    ];
    for (const { struct, codec, names } of cases) {
      const layout = btf.struct(struct);
      assert.equal(layout.size, codec.size, `sizeof(struct ${struct})`);
      const fromCodec = codec.layout.map((f) => ({ name: names[f.name]!, offset: f.offset, size: f.size })).sort((a, b) => a.offset - b.offset);
      // trace_state's tail padding is a named array in C and no field of the codec.
      assert.deepEqual(btfMembers(layout, struct === 'trace_state' ? ['pad'] : []), fromCodec, `members of struct ${struct}`);
    }
  });
}

test('the constants of bpf/lib/events.h and trace.h are the ones the TS side uses', () => {
  const header = readFileSync(root + 'bpf/lib/events.h', 'utf8');
  const defs = new Map([...header.matchAll(/^#define\s+(\w+)\s+(\d+)\b/gm)].map((m) => [m[1]!, Number(m[2])]));
  const want = (name: string): number => {
    const v = defs.get(name);
    assert.ok(v !== undefined, `${name} in events.h`);
    return v;
  };
  assert.equal(want('EVENT_TYPE_DROP'), EVENT_TYPE_DROP);
  assert.equal(want('EVENT_TYPE_TRACE'), EVENT_TYPE_TRACE);
  assert.equal(want('EVENT_TYPE_POLICY_VERDICT'), EVENT_TYPE_POLICY_VERDICT);
  assert.equal(want('EVENT_VERSION'), EVENT_VERSION);
  assert.equal(want('EVENT_CAP_MAX'), EVENT_CAP_MAX);
  const points = ['TO_ENDPOINT', 'TO_PROXY', 'TO_HOST', 'TO_STACK', 'TO_OVERLAY', 'FROM_ENDPOINT', 'FROM_PROXY', 'FROM_HOST', 'FROM_STACK', 'FROM_OVERLAY', 'FROM_NETWORK', 'TO_NETWORK'];
  assert.deepEqual(points.map((p) => want(`TRACE_${p}`)), points.map((p) => OBS_POINTS.indexOf(p.toLowerCase().replace('_', '-') as (typeof OBS_POINTS)[number])));
  for (const [id, name] of EVENT_FILES) assert.equal(want(`EVENT_FILE_${name.toUpperCase()}`), id);
  const trace = readFileSync(root + 'bpf/lib/trace.h', 'utf8');
  const hooks = new Map([...trace.matchAll(/^#define\s+(TRACE_HOOK_\w+)\s+(\d+)/gm)].map((m) => [m[1]!, Number(m[2])]));
  assert.deepEqual(Object.fromEntries(hooks), {
    TRACE_HOOK_FROM_CONTAINER,
    TRACE_HOOK_FROM_HOST,
    TRACE_HOOK_FROM_OVERLAY,
    TRACE_HOOK_FROM_NETDEV,
  });
  const matches = ['NONE', 'L3_ONLY', 'L3_L4', 'L4_ONLY', 'ALL', 'L3_PROTO', 'PROTO_ONLY'];
  assert.deepEqual(matches.map((m) => POLICY_MATCH_TYPES[want(`VERDICT_MATCH_${m}`)]), ['none', 'L3-Only', 'L3-L4', 'L4-Only', 'all', 'L3-Proto', 'Proto-Only']);
});
