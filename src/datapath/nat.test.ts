// Unit tests of the NAT map layouts against host.o's BTF and lib/nat.h (no privileges).
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Btf } from '../kernel/bpf/index.js';
import { IPMASQ_MAP_SIZE, NAT_DIR_IN, NAT_DIR_OUT, NAT_F_MASQ, NAT_VALUE_C_NAMES, SNAT_MAP_SIZE, ipmasqKeyCodec, natConstants, natValueCodec } from './nat.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

test('struct nat_entry4 and ipmasq_key in host.o match the codecs (BTF); sizes and directions match nat.h', () => {
  const btf = Btf.fromFile(root + 'build/bpf/host.o');
  const layout = btf.struct('nat_entry4');
  assert.equal(layout.size, natValueCodec.size);
  assert.deepEqual(
    layout.members.map((m) => ({ name: m.name, offset: m.offset, size: m.size })),
    natValueCodec.layout.map((f) => ({ name: NAT_VALUE_C_NAMES[f.name as keyof typeof NAT_VALUE_C_NAMES], offset: f.offset, size: f.size })).sort((a, b) => a.offset - b.offset),
  );
  assert.equal(btf.struct('ipmasq_key').size, ipmasqKeyCodec.size);
  const key = ipmasqKeyCodec.encode({ prefix: '10.1.0.0/16' });
  assert.deepEqual([key.readUInt32LE(0), ...key.subarray(4)], [16, 10, 1, 0, 0]);
  assert.deepEqual(ipmasqKeyCodec.decode(key), { prefix: '10.1.0.0/16' });
  const h = readFileSync(root + 'bpf/lib/nat.h', 'utf8');
  const define = (name: string): number => Number(new RegExp(`#define\\s+${name}\\s+(\\d+)`).exec(h)?.[1]);
  assert.deepEqual([define('NAT_MAP_SIZE'), define('IPMASQ_MAP_SIZE'), define('NAT_DIR_OUT'), define('NAT_DIR_IN'), define('NAT_F_MASQ')], [SNAT_MAP_SIZE, IPMASQ_MAP_SIZE, NAT_DIR_OUT, NAT_DIR_IN, NAT_F_MASQ]);
});

test('natConstants: off by default; the native-routing CIDR as network-order address and mask', () => {
  assert.equal(natConstants(undefined)['CONFIG_MASQ'], 0);
  const c = natConstants({ enabled: true, portMin: 40000, portMax: 50000, nativeRoutingCidr: '10.0.0.0/8', ipMasqAgent: true });
  assert.deepEqual(c, {
    CONFIG_MASQ: 1,
    CONFIG_NAT_PORT_MIN: 40000,
    CONFIG_NAT_PORT_MAX: 50000,
    CONFIG_NATIVE_ROUTING_NET4: 10, // 10.0.0.0 read little-endian
    CONFIG_NATIVE_ROUTING_MASK4: 0xff,
    CONFIG_IPMASQ: 1,
  });
});
