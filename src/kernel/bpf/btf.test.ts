// Unit tests of the ELF/BTF readers and CollectionSpec against the compiled smoke object (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Btf } from './btf.js';
import { ElfFile, STT_FUNC, STT_OBJECT } from './elf.js';
import { CollectionSpec } from './collection.js';
import { SKB_CTX_SIZE } from './program.js';
import { bytes, structCodec, u16, u32, u64 } from './codec.js';

// dist/src/kernel/bpf/ -> repository root
const SMOKE = fileURLToPath(new URL('../../../../build/bpf/tests/kernel_smoke.o', import.meta.url));

function smokeElf(): ElfFile {
  assert.ok(fs.existsSync(SMOKE), `${SMOKE} is missing: run "make -C bpf" first`);
  return ElfFile.open(SMOKE);
}

test('ElfFile.open() lists the sections and symbols clang emitted', () => {
  const elf = smokeElf();
  assert.equal(elf.isBpf, true);
  for (const name of ['tc', 'xdp', '.rodata', '.maps', 'license', '.BTF']) {
    assert.ok(elf.section(name), `section ${name}`);
  }
  const tc = elf.section('tc');
  const fn = elf.symbols().find((s) => s.name === 'smoke_tc');
  assert.equal(fn?.type, STT_FUNC);
  assert.equal(fn?.sectionIndex, tc?.index);
  assert.equal(elf.sectionData('license')?.toString('utf8').replace(/\0+$/, ''), 'Dual BSD/GPL');
});

test('ElfFile.parse() rejects what is not a little-endian ELF64 with TENDRIL_ERR_ELF', () => {
  assert.throws(() => ElfFile.parse(Buffer.from('not an elf file at all, just text padding it out to 64 bytes......')), {
    code: 'TENDRIL_ERR_ELF',
  });
  const elf = fs.readFileSync(SMOKE);
  const truncated = Buffer.from(elf.subarray(0, 200));
  assert.throws(() => ElfFile.parse(truncated), { code: 'TENDRIL_ERR_ELF' });
  assert.throws(() => ElfFile.open('/nonexistent/x.o'), { code: 'TENDRIL_ERR_ELF' });
});

test('Btf.struct() gives member offsets and sizes with C padding', () => {
  const btf = Btf.fromElf(smokeElf());
  assert.deepEqual(btf.struct('smoke_value'), {
    name: 'smoke_value',
    size: 32,
    members: [
      { name: 'a', offset: 0, size: 4 },
      { name: 'b', offset: 4, size: 2 },
      { name: 'mac', offset: 6, size: 6 },
      { name: 'counter', offset: 16, size: 8 },
      { name: 'flags', offset: 24, size: 4 },
    ],
  });
  assert.throws(() => btf.struct('no_such_struct'), { code: 'TENDRIL_ERR_ELF' });
});

test('Btf.struct() flattens anonymous unions (struct __sk_buff) and agrees with skbCtx()', () => {
  const skb = Btf.fromElf(smokeElf()).struct('__sk_buff');
  assert.equal(skb.size, SKB_CTX_SIZE);
  const at = (name: string): { offset: number; size: number } | undefined => {
    const m = skb.members.find((x) => x.name === name);
    return m && { offset: m.offset, size: m.size };
  };
  // The offsets skbCtx()/decodeSkbCtx() write and read.
  assert.deepEqual(at('mark'), { offset: 8, size: 4 });
  assert.deepEqual(at('priority'), { offset: 32, size: 4 });
  assert.deepEqual(at('ingress_ifindex'), { offset: 36, size: 4 });
  assert.deepEqual(at('ifindex'), { offset: 40, size: 4 });
  assert.deepEqual(at('tc_index'), { offset: 44, size: 4 });
  assert.deepEqual(at('cb'), { offset: 48, size: 20 });
  assert.deepEqual(at('tstamp'), { offset: 152, size: 8 });
  // Members of the anonymous unions appear by name.
  assert.deepEqual(at('flow_keys'), { offset: 144, size: 8 });
  assert.deepEqual(at('sk'), { offset: 168, size: 8 });
});

test('Btf.datasecVars() fills .rodata offsets from the ELF symbols (clang leaves them 0)', () => {
  const elf = smokeElf();
  const vars = Btf.fromElf(elf).datasecVars('.rodata');
  assert.deepEqual(vars, [
    { name: 'SMOKE_RET', offset: 0, size: 4 },
    { name: 'SMOKE_MARK', offset: 4, size: 4 },
    { name: 'SMOKE_U64', offset: 8, size: 8 },
    { name: 'SMOKE_MAC', offset: 16, size: 6 },
    { name: 'SMOKE_BAD', offset: 22, size: 1 },
  ]);
  // Cross-check against the symbol table, an independent source.
  const rodata = elf.section('.rodata');
  for (const v of vars) {
    const sym = elf.symbols().find((s) => s.name === v.name && s.type === STT_OBJECT);
    assert.equal(sym?.sectionIndex, rodata?.index, v.name);
    assert.equal(sym?.value, v.offset, v.name);
    assert.equal(sym?.size, v.size, v.name);
  }
  // Without the ELF fixup the raw BTF says 0 for every offset.
  const raw = Btf.parse(elf.sectionData('.BTF') ?? Buffer.alloc(0)).datasecVars('.rodata');
  assert.ok(raw.every((v) => v.offset === 0));
  assert.throws(() => Btf.fromElf(elf).datasecVars('.nope'), { code: 'TENDRIL_ERR_ELF' });
});

test('Btf.parse() rejects bad magic', () => {
  assert.throws(() => Btf.parse(Buffer.alloc(32)), { code: 'TENDRIL_ERR_ELF' });
});

test('CollectionSpec.fromFile() reads map definitions and programs without the kernel', () => {
  const spec = CollectionSpec.fromFile(SMOKE);
  assert.deepEqual(spec.maps.get('smoke_hash'), {
    name: 'smoke_hash',
    type: 1,
    keySize: 4,
    valueSize: 32,
    maxEntries: 16,
    flags: 0,
    pinning: 'none',
  });
  assert.equal(spec.maps.get('smoke_pinned')?.pinning, 'by-name');
  assert.equal(spec.maps.get('smoke_percpu')?.type, 6);
  assert.deepEqual(
    [...spec.programs.values()],
    [
      { name: 'smoke_tc', section: 'tc' },
      { name: 'smoke_tc_alt', section: 'tc' },
      { name: 'smoke_xdp', section: 'xdp' },
    ],
  );
});

test('CollectionSpec.applyConstants() patches .rodata by name and rejects unknown names and wrong sizes', () => {
  const spec = CollectionSpec.fromFile(SMOKE);
  const rodata = spec.applyConstants(Buffer.alloc(23), {
    SMOKE_RET: 7,
    SMOKE_U64: 0x0102030405060708n,
    SMOKE_MAC: Buffer.from([1, 2, 3, 4, 5, 6]),
    SMOKE_BAD: 1,
  });
  assert.equal(rodata.readUInt32LE(0), 7);
  assert.equal(rodata.readBigUInt64LE(8), 0x0102030405060708n);
  assert.deepEqual([...rodata.subarray(16, 22)], [1, 2, 3, 4, 5, 6]);
  assert.equal(rodata[22], 1);
  assert.throws(() => spec.applyConstants(Buffer.alloc(23), { NOPE: 1 }), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'TENDRIL_ERR_BPF');
    assert.match(err.message, /"NOPE"/);
    return true;
  });
  assert.throws(() => spec.applyConstants(Buffer.alloc(23), { SMOKE_MAC: Buffer.alloc(5) }), /SMOKE_MAC.*6 bytes/);
  assert.throws(() => spec.applyConstants(Buffer.alloc(23), { SMOKE_BAD: 256 }), /SMOKE_BAD.*does not fit/);
  assert.throws(() => spec.applyConstants(Buffer.alloc(23), { SMOKE_RET: 1.5 }), /not an integer/);
  // Negative numbers are stored two's complement.
  assert.equal(spec.applyConstants(Buffer.alloc(23), { SMOKE_RET: -1 }).readUInt32LE(0), 0xffffffff);
});

test('structCodec() layout matches the struct in BTF (the pattern for map value codecs)', () => {
  const codec = structCodec<{ a: number; b: number; mac: Buffer; counter: bigint; flags: number }>(32, {
    a: [0, u32],
    b: [4, u16],
    mac: [6, bytes(6)],
    counter: [16, u64],
    flags: [24, u32],
  });
  const btf = Btf.fromElf(smokeElf()).struct('smoke_value');
  assert.equal(codec.size, btf.size);
  assert.deepEqual(codec.layout, btf.members);
});
