// The service map codecs agree with bpf/lib/lb.h: size and every named member's offset and size, read from the
// objects' BTF (padding members are the codecs' zero bytes).
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Btf } from '../kernel/bpf/index.js';
import { lb4BackendCodec, lb4KeyCodec, lb4MaglevKeyCodec, lb4ReverseNatCodec, lb4ServiceCodec, lb4SourceRangeKeyCodec } from './maps.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));

const C_NAMES: Record<string, string> = {
  address: 'address',
  port: 'port',
  slot: 'backend_slot',
  proto: 'proto',
  scope: 'scope',
  backendId: 'backend_id',
  count: 'count',
  revNatIndex: 'rev_nat_index',
  flags: 'flags',
  maglevSize: 'maglev_size',
  affinityTimeout: 'affinity_timeout',
  index: 'index',
  prefixlen: 'prefixlen',
  addr: 'addr',
};

for (const obj of ['build/bpf/lxc.o', 'build/bpf/host.o', 'build/bpf/overlay.o']) {
  test(`the lb4 structs in ${obj} match the service map codecs (BTF)`, () => {
    const btf = Btf.fromFile(root + obj);
    const cases: Array<{ struct: string; codec: { size: number; layout: readonly { name: string; offset: number; size: number }[] }; rename: Record<string, string> }> = [
      { struct: 'lb4_key', codec: lb4KeyCodec, rename: { port: 'dport' } },
      { struct: 'lb4_service', codec: lb4ServiceCodec, rename: {} },
      { struct: 'lb4_backend', codec: lb4BackendCodec, rename: {} },
      { struct: 'lb4_reverse_nat', codec: lb4ReverseNatCodec, rename: {} },
      { struct: 'lb4_maglev_key', codec: lb4MaglevKeyCodec, rename: {} },
      { struct: 'lb4_src_range_key', codec: lb4SourceRangeKeyCodec, rename: {} },
    ];
    for (const c of cases) {
      const layout = btf.struct(c.struct);
      assert.equal(layout.size, c.codec.size, `sizeof(struct ${c.struct})`);
      const fromCodec = c.codec.layout.map((f) => ({ name: c.rename[f.name] ?? C_NAMES[f.name], offset: f.offset, size: f.size })).sort((a, b) => a.offset - b.offset);
      const fromBtf = layout.members.filter((m) => !m.name.startsWith('pad')).map((m) => ({ name: m.name, offset: m.offset, size: m.size }));
      assert.deepEqual(fromBtf, fromCodec, `members of struct ${c.struct}`);
    }
  });
}

test('lb4SourceRangeKeyCodec: prefixlen counts the service ID bits, host bits are cleared, decode gives the CIDR back', () => {
  const b = lb4SourceRangeKeyCodec.encode({ revNatIndex: 7, cidr: '192.168.10.201/28' });
  assert.equal(b.readUInt32LE(0), 32 + 28);
  assert.equal(b.readUInt16LE(4), 7);
  assert.equal(b.subarray(8, 12).toString('hex'), 'c0a80ac0');
  assert.deepEqual(lb4SourceRangeKeyCodec.decode(b), { revNatIndex: 7, cidr: '192.168.10.192/28' });
});
