// Unit tests of the endpoint and ipcache map codecs, including the C/TS layout agreement read from the objects' BTF.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Btf } from '../kernel/bpf/index.js';
import * as maps from './maps.js';
import {
  CT_KEY_C_NAMES,
  CT_VALUE_C_NAMES,
  ENDPOINT_INFO_C_NAMES,
  METRICS_KEY_C_NAMES,
  METRICS_VALUE_C_NAMES,
  POLICY_KEY_C_NAMES,
  POLICY_VALUE_C_NAMES,
  ctKeyCodec,
  ctValueCodec,
  metricsKeyCodec,
  metricsValueCodec,
  policyKeyCodec,
  policyValueCodec,
  IPCACHE_KEY_C_NAMES,
  IPCACHE_VALUE_C_NAMES,
  dropReasonText,
  endpointInfoCodec,
  endpointKeyCodec,
  ifindexKeyCodec,
  ipcacheKeyCodec,
  ipcacheValueCodec,
  type EndpointInfo,
  type IpcacheValue,
} from './maps.js';

// Compiled to dist/src/datapath/: the repository root is three levels up.
const root = fileURLToPath(new URL('../../../', import.meta.url));
const objects = ['build/bpf/lxc.o', 'build/bpf/host.o', 'build/bpf/overlay.o'];

const sample: EndpointInfo = {
  ifindex: 0x01020304,
  lxcId: 4242,
  flags: maps.ENDPOINT_F_HOST,
  mac: '02:aa:bb:cc:dd:01',
  nodeMac: '02:aa:bb:cc:dd:02',
  secId: 0x00abcdef,
  ip4: '10.200.3.7',
};

test('endpointInfoCodec round-trips every field', () => {
  const buf = endpointInfoCodec.encode(sample);
  assert.equal(buf.length, 28);
  assert.deepEqual(endpointInfoCodec.decode(buf), sample);
});

test('endpointInfoCodec puts host-order integers, raw MACs and a network-order IPv4 at the C offsets', () => {
  const buf = endpointInfoCodec.encode(sample);
  assert.equal(buf.readUInt32LE(0), sample.ifindex);
  assert.equal(buf.readUInt16LE(4), sample.lxcId);
  assert.equal(buf.readUInt16LE(6), sample.flags);
  assert.equal(buf.subarray(8, 14).toString('hex'), '02aabbccdd01');
  assert.equal(buf.subarray(14, 20).toString('hex'), '02aabbccdd02');
  assert.equal(buf.readUInt32LE(20), sample.secId);
  assert.deepEqual([...buf.subarray(24, 28)], [10, 200, 3, 7]);
});

test('endpointKeyCodec encodes the IPv4 address in network order', () => {
  const buf = endpointKeyCodec.encode({ ip4: '10.1.2.3' });
  assert.deepEqual([...buf], [10, 1, 2, 3]);
  assert.deepEqual(endpointKeyCodec.decode(buf), { ip4: '10.1.2.3' });
});

test('ifindexKeyCodec is a host-order u32', () => {
  const buf = ifindexKeyCodec.encode(77);
  assert.equal(buf.length, 4);
  assert.equal(buf.readUInt32LE(0), 77);
  assert.equal(ifindexKeyCodec.decode(buf), 77);
});

test('endpointInfoCodec refuses values that do not fit the C fields', () => {
  assert.throws(() => endpointInfoCodec.encode({ ...sample, lxcId: 65536 }), RangeError);
  assert.throws(() => endpointInfoCodec.encode({ ...sample, ifindex: -1 }), RangeError);
  assert.throws(() => endpointInfoCodec.encode({ ...sample, mac: '02:aa:bb' }), TypeError);
  assert.throws(() => endpointInfoCodec.encode({ ...sample, ip4: '10.0.0.256' }), TypeError);
});

test('ipcacheKeyCodec encodes prefixlen = 32 + mask bits, family IPv4 and the network address in network order', () => {
  const buf = ipcacheKeyCodec.encode({ prefix: '10.201.1.0/24' });
  assert.equal(buf.length, 12);
  assert.equal(buf.readUInt32LE(0), 32 + 24);
  assert.equal(buf.readUInt16LE(4), 0, 'cluster_id');
  assert.equal(buf[6], 0, 'pad');
  assert.equal(buf[7], maps.IPCACHE_FAMILY_IPV4);
  assert.deepEqual([...buf.subarray(8, 12)], [10, 201, 1, 0]);
  assert.deepEqual(ipcacheKeyCodec.decode(buf), { prefix: '10.201.1.0/24' });
});

test('ipcacheKeyCodec treats a bare address as /32 and clears host bits of a CIDR', () => {
  assert.deepEqual(ipcacheKeyCodec.decode(ipcacheKeyCodec.encode({ prefix: '192.0.2.7' })), { prefix: '192.0.2.7/32' });
  assert.deepEqual(ipcacheKeyCodec.encode({ prefix: '10.1.2.3/16' }), ipcacheKeyCodec.encode({ prefix: '10.1.0.0/16' }));
  assert.deepEqual(ipcacheKeyCodec.decode(ipcacheKeyCodec.encode({ prefix: '0.0.0.0/0' })), { prefix: '0.0.0.0/0' });
  const withCluster = ipcacheKeyCodec.encode({ prefix: '10.0.0.0/8', clusterId: 3 });
  assert.equal(withCluster.readUInt16LE(4), 3);
  assert.deepEqual(ipcacheKeyCodec.decode(withCluster), { prefix: '10.0.0.0/8', clusterId: 3 });
});

test('ipcacheKeyCodec refuses invalid prefixes and undecodable keys', () => {
  assert.throws(() => ipcacheKeyCodec.encode({ prefix: '10.0.0.0/33' }), TypeError);
  assert.throws(() => ipcacheKeyCodec.encode({ prefix: 'fd00::/64' }), TypeError);
  const v6 = ipcacheKeyCodec.encode({ prefix: '10.0.0.0/8' });
  v6[7] = 2;
  assert.throws(() => ipcacheKeyCodec.decode(v6), RangeError);
  const tooLong = ipcacheKeyCodec.encode({ prefix: '10.0.0.0/8' });
  tooLong.writeUInt32LE(32 + 33, 0);
  assert.throws(() => ipcacheKeyCodec.decode(tooLong), RangeError);
});

test('ipcacheValueCodec round-trips and puts each field at its C offset', () => {
  const v: IpcacheValue = { identity: 0x00123456, tunnelEndpoint: '192.168.50.101', nodeId: 513, flags: maps.IPCACHE_F_HAS_TUNNEL_EP, key: 7 };
  const buf = ipcacheValueCodec.encode(v);
  assert.equal(buf.length, 12);
  assert.equal(buf.readUInt32LE(0), 0x00123456);
  assert.deepEqual([...buf.subarray(4, 8)], [192, 168, 50, 101]);
  assert.equal(buf.readUInt16LE(8), 513);
  assert.equal(buf[10], 1);
  assert.equal(buf[11], 7);
  assert.deepEqual(ipcacheValueCodec.decode(buf), v);
});

/** The codec's size and members (by their C names) are the struct's in the object's BTF. */
function assertLayout(btf: Btf, struct: string, codec: { size: number; layout: readonly { name: string; offset: number; size: number }[] }, names: Readonly<Record<string, string>>): void {
  const layout = btf.struct(struct);
  assert.equal(layout.size, codec.size, `sizeof(struct ${struct})`);
  const fromCodec = codec.layout.map((f) => ({ name: names[f.name], offset: f.offset, size: f.size })).sort((a, b) => a.offset - b.offset);
  const fromBtf = layout.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size }));
  assert.deepEqual(fromBtf, fromCodec, `members of struct ${struct}`);
}

for (const obj of objects) {
  test(`struct ipcache_key and remote_endpoint_info in ${obj} match the codecs (BTF)`, () => {
    const btf = Btf.fromFile(root + obj);
    const cases = [
      { struct: 'ipcache_key', codec: ipcacheKeyCodec, names: IPCACHE_KEY_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'remote_endpoint_info', codec: ipcacheValueCodec, names: IPCACHE_VALUE_C_NAMES as Readonly<Record<string, string>> },
    ];
    for (const c of cases) assertLayout(btf, c.struct, c.codec, c.names);
  });

  test(`struct endpoint_info in ${obj} has the codec's size and member offsets (BTF)`, () => {
    const layout = Btf.fromFile(root + obj).struct('endpoint_info');
    assert.equal(layout.size, endpointInfoCodec.size);
    const fromCodec = endpointInfoCodec.layout
      .map((f) => ({ name: ENDPOINT_INFO_C_NAMES[f.name as keyof EndpointInfo], offset: f.offset, size: f.size }))
      .sort((a, b) => a.offset - b.offset);
    const fromBtf = layout.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size }));
    assert.deepEqual(fromBtf, fromCodec);
  });

  test(`struct endpoint_key in ${obj} has the codec's size and member offsets (BTF)`, () => {
    const layout = Btf.fromFile(root + obj).struct('endpoint_key');
    assert.equal(layout.size, endpointKeyCodec.size);
    assert.deepEqual(
      layout.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size })),
      endpointKeyCodec.layout.map((f) => ({ name: f.name, offset: f.offset, size: f.size })),
    );
  });
}

for (const obj of objects) {
  test(`policy, conntrack and metrics structs in ${obj} match the codecs (BTF)`, () => {
    const btf = Btf.fromFile(root + obj);
    const cases = [
      { struct: 'policy_key', codec: policyKeyCodec, names: POLICY_KEY_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'policy_entry', codec: policyValueCodec, names: POLICY_VALUE_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'ct_tuple4', codec: ctKeyCodec, names: CT_KEY_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'ct_entry', codec: ctValueCodec, names: CT_VALUE_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'metrics_key', codec: metricsKeyCodec, names: METRICS_KEY_C_NAMES as Readonly<Record<string, string>> },
      { struct: 'metrics_value', codec: metricsValueCodec, names: METRICS_VALUE_C_NAMES as Readonly<Record<string, string>> },
    ];
    for (const c of cases) assertLayout(btf, c.struct, c.codec, c.names);
  });
}

test('policyKeyCodec puts the port in network order after the static 56 bits; ENDPOINT_F_* match maps.h', () => {
  const buf = policyKeyCodec.encode({ prefixlen: 56 + 8 + 13, secLabel: 0x00123456, epId: 513, egress: 1, protocol: 6, dport: 8080, pad: 0 });
  assert.equal(buf.length, 16);
  assert.equal(buf.readUInt32LE(0), 77);
  assert.equal(buf.readUInt32LE(4), 0x00123456);
  assert.equal(buf.readUInt16LE(8), 513);
  assert.deepEqual([buf[10], buf[11]], [1, 6]);
  assert.deepEqual([...buf.subarray(12, 14)], [0x1f, 0x90]);
  const header = readFileSync(root + 'bpf/lib/maps.h', 'utf8');
  for (const [name, value] of [['ENDPOINT_F_HOST', maps.ENDPOINT_F_HOST], ['ENDPOINT_F_INGRESS_ENFORCED', maps.ENDPOINT_F_INGRESS_ENFORCED], ['ENDPOINT_F_EGRESS_ENFORCED', maps.ENDPOINT_F_EGRESS_ENFORCED]] as const) {
    assert.match(header, new RegExp(`#define\\s+${name}\\s+${value}\\b`), name);
  }
});

test('map sizes and names of policy.h, conntrack.h and drop.h are the ones maps.ts states', () => {
  const text = ['bpf/lib/policy.h', 'bpf/lib/conntrack.h', 'bpf/lib/drop.h'].map((f) => readFileSync(root + f, 'utf8')).join('\n');
  const define = (name: string): number => Number(new RegExp(`#define\\s+${name}\\s+(\\d+)`).exec(text)?.[1]);
  assert.equal(define('POLICY_MAP_SIZE'), maps.POLICY_MAP_SIZE);
  assert.equal(define('POLICY_STATIC_PREFIX_BITS'), maps.POLICY_STATIC_PREFIX_BITS);
  assert.equal(define('IPBLOCK_MAP_SIZE'), maps.IPBLOCK_MAP_SIZE);
  assert.equal(define('CT_MAP_SIZE_TCP'), maps.CT_MAP_SIZE_TCP);
  assert.equal(define('CT_MAP_SIZE_ANY'), maps.CT_MAP_SIZE_ANY);
  assert.equal(define('CT_INGRESS'), maps.CT_INGRESS);
  assert.equal(define('CT_F_SEEN_NON_SYN'), maps.CT_F_SEEN_NON_SYN);
  assert.equal(define('METRIC_DIR_EGRESS'), maps.METRIC_DIR_EGRESS);
  for (const name of [maps.POLICY_MAP, maps.IPBLOCK_MAP, maps.CT_MAP_TCP, maps.CT_MAP_ANY, maps.METRICS_MAP]) assert.match(text, new RegExp(`\\} ${name} SEC`), name);
  // tendril_ipblock is keyed by an ipcache_key (layout checked above) and holds a u32 identity.
  assert.match(text, /__type\(key, struct ipcache_key\);\s*__type\(value, __u32\);[^}]*\} tendril_ipblock SEC/);
  assert.equal(maps.ipblockValueCodec.size, 4);
  const config = readFileSync(root + 'bpf/lib/config.h', 'utf8');
  for (const [name, value] of [['CONFIG_CT_TIMEOUT_TCP', 8000], ['CONFIG_CT_TIMEOUT_TCP_SYN', 60], ['CONFIG_CT_TIMEOUT_TCP_FIN', 10], ['CONFIG_CT_TIMEOUT_ANY', 60]] as const) {
    assert.match(config, new RegExp(`${name} = ${value};`), name);
  }
  assert.deepEqual(maps.CT_TIMEOUTS_DEFAULT, { tcp: 8000, tcpSyn: 60, tcpFin: 10, any: 60 });
});

test('every DROP_* code of bpf/lib/drop.h is exported with the same value and a Cilium reason text', () => {
  const header = readFileSync(root + 'bpf/lib/drop.h', 'utf8');
  const defs = [...header.matchAll(/^#define\s+(DROP_\w+)\s+(-\d+)\s*\/\*\s*(.*?)\s*\*\//gm)];
  assert.ok(defs.length >= 5, `expected DROP_* defines in drop.h, found ${defs.length}`);
  const exported = maps as unknown as Record<string, unknown>;
  for (const [, name, code, text] of defs) {
    assert.equal(exported[name!], Number(code), `${name} in maps.ts`);
    assert.equal(dropReasonText(Number(code)), text, `reason text of ${name}`);
  }
});

test('dropReasonText() accepts negative and positive codes', () => {
  assert.equal(dropReasonText(-132), 'Invalid source ip');
  assert.equal(dropReasonText(139), 'Unsupported L3 protocol');
  assert.equal(dropReasonText(-1), 'Unknown drop reason 1');
});
