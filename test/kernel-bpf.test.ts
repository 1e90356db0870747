// Privileged integration tests of src/kernel/bpf: load, constants, maps, pins, verifier errors, tcx and tc attach.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KernelError, VerifierError } from '../src/kernel/errors.js';
import {
  BPF_LINK_TYPE_TCX,
  BPF_TCX_INGRESS,
  BpfMap,
  BpfProgram,
  Collection,
  Link,
  attachProgram,
  attachTc,
  attachTcx,
  bytes,
  decodeSkbCtx,
  ensureBpffs,
  isBpffs,
  removePinned,
  haveTcx,
  skbCtx,
  structCodec,
  u16,
  u32,
  u64,
} from '../src/kernel/bpf/index.js';
import { simulateNoTcxForTesting } from '../src/kernel/bpf/link.js';
import { umount2 } from '../src/kernel/native/libc.js';
import { Netns } from '../src/kernel/netns/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';

// dist/test/ -> repository root
const SMOKE = fileURLToPath(new URL('../../build/bpf/tests/kernel_smoke.o', import.meta.url));
const RUN = `${process.pid}`;
const PIN_DIR = `/sys/fs/bpf/tendril-test-${RUN}`;
const NS_A = `tdlt-${RUN}-bpfa`;
const NS_B = `tdlt-${RUN}-bpfb`;
const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;

const smokeValue = structCodec<{ a: number; b: number; mac: Buffer; counter: bigint; flags: number }>(32, {
  a: [0, u32],
  b: [4, u16],
  mac: [6, bytes(6)],
  counter: [16, u64],
  flags: [24, u32],
});

/** A minimal Ethernet + IPv4 frame; programs only need bytes to look at. */
function packet(): Buffer {
  const b = Buffer.alloc(64);
  b.writeUInt16BE(0x0800, 12);
  b[14] = 0x45;
  return b;
}

before(() => {
  assert.equal(process.getuid?.(), 0, 'these tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
  assert.ok(fs.existsSync(SMOKE), `${SMOKE} is missing: run "make -C bpf" first`);
  ensureBpffs();
  assert.ok(isBpffs('/sys/fs/bpf'));
});

after(() => {
  removePinned(PIN_DIR);
  Netns.delete(NS_A);
  Netns.delete(NS_B);
});

test('Collection.load() sets .rodata constants the program then returns', () => {
  const mac = Buffer.from([0x02, 0, 0, 0, 0, 0x2a]);
  const c = Collection.load(SMOKE, { constants: { SMOKE_RET: 7, SMOKE_MARK: 0x1234, SMOKE_U64: 1n << 40n, SMOKE_MAC: mac } });
  try {
    const r = c.program('smoke_tc').run({ data: packet(), ctx: skbCtx({ mark: 1 }) });
    assert.equal(r.retval, 7);
    assert.equal(r.data.length, 64);
    assert.ok(r.ctx);
    assert.equal(decodeSkbCtx(r.ctx).mark, 0x1234);
    // The frozen .rodata map holds exactly what we set.
    const rodata = c.map('.rodata').get(u32.encode(0));
    assert.equal(rodata.readBigUInt64LE(8), 1n << 40n);
    assert.deepEqual(rodata.subarray(16, 22), mac);
  } finally {
    c.close();
  }
  // Another load with another value: compiled once, configured at load.
  const c2 = Collection.load(SMOKE, { constants: { SMOKE_RET: 3 } });
  try {
    assert.equal(c2.program('smoke_tc').run({ data: packet() }).retval, 3);
  } finally {
    c2.close();
  }
});

test('Collection.load() rejects unknown constants and wrong sizes before touching the kernel', () => {
  assert.throws(
    () => Collection.load(SMOKE, { constants: { NO_SUCH_CONST: 1 } }),
    (err: unknown) => err instanceof KernelError && err.code === 'TENDRIL_ERR_BPF' && /"NO_SUCH_CONST"/.test(err.message),
  );
  assert.throws(
    () => Collection.load(SMOKE, { constants: { SMOKE_MAC: Buffer.alloc(4) } }),
    (err: unknown) => err instanceof KernelError && err.code === 'TENDRIL_ERR_BPF' && /"SMOKE_MAC"/.test(err.message),
  );
  assert.throws(() => Collection.load(SMOKE, { constants: { SMOKE_RET: 2 ** 32 } }), /"SMOKE_RET".*does not fit/);
});

test('Collection.program() finds by function or unique section name; map()/program() throw for absent names', () => {
  const c = Collection.load(SMOKE);
  try {
    assert.equal(c.program('xdp').name, 'smoke_xdp');
    assert.equal(c.program('smoke_tc_alt').section, 'tc');
    assert.throws(() => c.program('tc'), /section has 2 programs/);
    assert.throws(() => c.program('nope'), { code: 'TENDRIL_ERR_BPF' });
    assert.throws(() => c.map('nope'), { code: 'TENDRIL_ERR_BPF' });
    assert.equal(c.program('smoke_xdp').run({ data: packet() }).retval, 2 /* XDP_PASS */);
    assert.equal(c.program('smoke_tc_alt').run({ data: packet() }).retval, TC_ACT_SHOT);
  } finally {
    c.close();
  }
});

test('BpfMap update/lookup/iterate/delete and key-not-exist semantics', () => {
  const c = Collection.load(SMOKE);
  try {
    const raw = c.map('smoke_hash');
    assert.equal(raw.keySize, 4);
    assert.equal(raw.valueSize, 32);
    assert.equal(raw.maxEntries, 16);
    assert.equal(raw.type, 1);
    const m = raw.typed(u32, smokeValue);
    const v = (i: number): { a: number; b: number; mac: Buffer; counter: bigint; flags: number } => ({
      a: i,
      b: i + 1,
      mac: Buffer.from([2, 0, 0, 0, 0, i]),
      counter: BigInt(i) << 33n,
      flags: 0xffffffff,
    });

    assert.equal(m.lookup(1), undefined);
    assert.throws(() => m.get(1), { code: 'TENDRIL_ERR_BPF_KEY_NOT_EXIST' });
    assert.throws(() => m.update(1, v(1), 'exist'), { code: 'TENDRIL_ERR_BPF_KEY_NOT_EXIST' });
    assert.equal(m.delete(1), false);

    for (let i = 1; i <= 5; i++) m.put(i, v(i));
    assert.deepEqual(m.get(3), v(3));
    assert.throws(
      () => m.update(3, v(3), 'noexist'),
      (err: unknown) => err instanceof KernelError && err.is('EEXIST') && /smoke_hash/.test(err.message),
    );
    m.update(3, { ...v(3), flags: 7 }, 'exist');
    assert.equal(m.get(3).flags, 7);

    const all = new Map(m.entries());
    assert.deepEqual([...all.keys()].sort(), [1, 2, 3, 4, 5]);
    assert.deepEqual(all.get(5), v(5));
    assert.equal([...raw.keys()].length, 5);

    assert.equal(m.delete(2), true);
    assert.equal(m.lookup(2), undefined);
    // Deleting every key while iterating still terminates and empties the map.
    for (const k of raw.keys()) raw.delete(k);
    assert.equal([...raw.entries()].length, 0);

    // Sizes are checked before the kernel reads our buffers.
    assert.throws(() => raw.lookup(Buffer.alloc(3)), /key is 3 bytes, expected 4/);
    assert.throws(() => raw.update(u32.encode(1), Buffer.alloc(8)), /value is 8 bytes, expected 32/);
    assert.throws(() => raw.typed(u64, smokeValue), { code: 'TENDRIL_ERR_BPF' });

    // An array map: the program counts its runs in smoke_array[0].
    const arr = c.map('smoke_array').typed(u32, u64);
    const before = arr.get(0);
    c.program('smoke_tc').run({ data: packet(), repeat: 10 });
    assert.equal(arr.get(0) - before, 10n);
    assert.throws(() => c.map('smoke_array').delete(u32.encode(0)), { code: 'TENDRIL_ERR_BPF' }); // EINVAL on arrays

    // Per-CPU: one value per possible CPU; their sum is the number of runs.
    const pc = c.map('smoke_percpu');
    assert.equal(pc.perCpu, true);
    const perCpu = pc.lookupPerCpu(u32.encode(0));
    assert.ok(perCpu);
    assert.equal(
      perCpu.reduce((s, b) => s + b.readUInt32LE(0), 0),
      10,
    );
    assert.throws(() => pc.typed(u32, u32), { code: 'TENDRIL_ERR_NOT_SUPPORTED' });
    pc.updatePerCpu(u32.encode(0), perCpu.map(() => u32.encode(0)));
    assert.ok(pc.lookupPerCpu(u32.encode(0))?.every((b) => b.readUInt32LE(0) === 0));
  } finally {
    c.close();
  }
});

test('BpfMap entries() of a hash map (batched) equals the key walk; deleteMany() skips keys already gone', () => {
  const c = Collection.load(SMOKE);
  try {
    const raw = c.map('smoke_hash');
    const m = raw.typed(u32, smokeValue);
    const v = (i: number): { a: number; b: number; mac: Buffer; counter: bigint; flags: number } => ({ a: i, b: i * 3, mac: Buffer.from([2, 0, 0, 0, 0, i]), counter: BigInt(i) << 40n, flags: i });
    for (let i = 100; i < 100 + raw.maxEntries; i++) m.put(i, v(i));
    const walked = [...raw.keys()].map((k) => [k.toString('hex'), raw.lookup(k)!.toString('hex')]).sort();
    const batched = [...raw.entries()].map(([k, val]) => [k.toString('hex'), val.toString('hex')]).sort();
    assert.equal(batched.length, raw.maxEntries);
    assert.deepEqual(batched, walked);
    // 5 present keys around 2 absent ones: 5 deleted, the rest stays.
    assert.equal(m.deleteMany([100, 7, 101, 102, 9999, 103, 104]), 5);
    assert.deepEqual([...m.keys()].sort((a, b) => a - b), Array.from({ length: raw.maxEntries - 5 }, (_, i) => 105 + i));
    assert.equal(m.deleteMany([]), 0);
    assert.equal(m.deleteMany([...m.keys()]), raw.maxEntries - 5);
    assert.equal([...raw.entries()].length, 0);
    assert.throws(() => raw.deleteMany([Buffer.alloc(3)]), /key is 3 bytes, expected 4/);
  } finally {
    c.close();
  }
});

test('pinRoot pins LIBBPF_PIN_BY_NAME maps and a second load re-uses them; openPinned() sees the same map', () => {
  const pinRoot = path.join(PIN_DIR, 'maps');
  const c1 = Collection.load(SMOKE, { pinRoot });
  let c2: Collection | undefined;
  let pinned: BpfMap | undefined;
  try {
    assert.ok(fs.existsSync(path.join(pinRoot, 'smoke_pinned')));
    // Only the map declared with pinning is pinned.
    assert.deepEqual(fs.readdirSync(pinRoot), ['smoke_pinned']);
    c1.map('smoke_pinned').typed(u32, u32).put(1, 42);

    c2 = Collection.load(SMOKE, { pinRoot });
    assert.equal(c2.map('smoke_pinned').id, c1.map('smoke_pinned').id);
    assert.equal(c2.map('smoke_pinned').typed(u32, u32).get(1), 42);
    assert.notEqual(c2.map('smoke_hash').id, c1.map('smoke_hash').id);
    // The second object's program reads the shared map.
    assert.equal(c2.program('smoke_tc').run({ data: packet() }).retval, 42);

    pinned = BpfMap.openPinned(path.join(pinRoot, 'smoke_pinned'));
    assert.equal(pinned.name, 'smoke_pinned');
    assert.equal(pinned.keySize, 4);
    assert.equal(pinned.valueSize, 4);
    assert.equal(pinned.maxEntries, 8);
    assert.equal(pinned.id, c1.map('smoke_pinned').id);
    assert.equal(pinned.typed(u32, u32).get(1), 42);
    pinned.typed(u32, u32).put(2, 43);
    assert.equal(c1.map('smoke_pinned').typed(u32, u32).get(2), 43);

    // BpfMap.pin() of an unpinned map, then open it from the pin.
    const hashPin = path.join(PIN_DIR, 'hash');
    c1.map('smoke_hash').pin(hashPin);
    const again = BpfMap.openPinned(hashPin);
    assert.equal(again.id, c1.map('smoke_hash').id);
    again.close();
    assert.throws(() => c1.map('smoke_hash').pin(hashPin), (err: unknown) => err instanceof KernelError && err.is('EEXIST'));
  } finally {
    pinned?.close();
    c2?.close();
    c1.close();
  }
  assert.throws(() => BpfMap.openPinned(path.join(PIN_DIR, 'nope')), (err: unknown) => err instanceof KernelError && err.is('ENOENT'));
  // Without pinRoot nothing is pinned anywhere.
  const c3 = Collection.load(SMOKE);
  c3.close();
  assert.equal(fs.existsSync('/sys/fs/bpf/smoke_pinned'), false);
});

test('a program the verifier rejects gives VerifierError with the log', () => {
  assert.throws(
    () => Collection.load(SMOKE, { constants: { SMOKE_BAD: 1 } }),
    (err: unknown) => {
      assert.ok(err instanceof VerifierError);
      assert.equal(err.code, 'TENDRIL_ERR_BPF_VERIFIER');
      assert.match(err.message, /program "smoke_tc" rejected by the verifier/);
      assert.match(err.log, /invalid mem access 'map_value_or_null'/);
      assert.ok(err.is('EACCES'));
      return true;
    },
  );
  // logLevel 2 reloads for the detailed log: longer than the level-1 one.
  let short = '';
  let long = '';
  try {
    Collection.load(SMOKE, { constants: { SMOKE_BAD: 1 } });
  } catch (err) {
    short = (err as VerifierError).log;
  }
  try {
    Collection.load(SMOKE, { constants: { SMOKE_BAD: 1 }, logLevel: 2 });
  } catch (err) {
    long = (err as VerifierError).log;
  }
  assert.ok(long.length > short.length, `level 2 log (${long.length}) longer than level 1 (${short.length})`);
});

// --- attach: two namespaces joined by a veth; the program sits on ingress of A's end ---

interface Wiring {
  a: Netns;
  b: Netns;
  ifindex: number;
}

let wiring: Wiring | undefined;

function wire(): Wiring {
  if (wiring) return wiring;
  const a = Netns.create(NS_A);
  const b = Netns.create(NS_B);
  const nl = Netlink.openIn(a);
  const nlb = Netlink.openIn(b);
  try {
    nl.createVeth({ name: 'tdla0', peerName: 'tdlb0', peerNetns: b });
    const link = nl.getLink('tdla0');
    assert.ok(link);
    nl.addAddress(link.index, '10.250.0.1/30');
    nl.setLink(link.index, { up: true });
    const peer = nlb.getLink('tdlb0');
    assert.ok(peer);
    nlb.addAddress(peer.index, '10.250.0.2/30');
    nlb.setLink(peer.index, { up: true });
    wiring = { a, b, ifindex: link.index };
    return wiring;
  } finally {
    nl.close();
    nlb.close();
  }
}

/** One ping from B to A's address over the veth; true when answered (within 5 s: a loaded machine is slow). */
function pingAFromB(): boolean {
  const r = spawnSync('nsenter', [`--net=/var/run/netns/${NS_B}`, 'ping', '-c1', '-W5', '-q', '10.250.0.1'], {
    encoding: 'utf8',
  });
  return r.status === 0;
}

function runsOf(c: Collection): bigint {
  return c.map('smoke_array').typed(u32, u64).get(0);
}

function bpftoolIn(ns: string, ...args: string[]): unknown {
  const r = spawnSync('nsenter', [`--net=/var/run/netns/${ns}`, 'bpftool', '-j', ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as unknown;
}

test('BpfProgram.run() resolves ctx ifindex in the calling thread netns', () => {
  const w = wire();
  const c = Collection.load(SMOKE);
  try {
    const r = w.a.run(() => c.program('smoke_tc').run({ data: packet(), ctx: skbCtx({ ifindex: w.ifindex }) }));
    assert.ok(r.ctx);
    assert.equal(decodeSkbCtx(r.ctx).ifindex, w.ifindex);
  } finally {
    c.close();
  }
});

test('attachProgram() with tcx: traffic runs the program, a pinned link survives close, update() swaps, detach() ends it', () => {
  const w = wire();
  const c = Collection.load(SMOKE, { constants: { SMOKE_RET: TC_ACT_OK } });
  const prog = c.program('smoke_tc');
  const linkPin = path.join(PIN_DIR, 'link_ingress');
  let adopted: Link | undefined;
  try {
    assert.ok(pingAFromB(), 'ping works before attaching');
    const link = w.a.run(() => attachProgram({ program: prog, ifindex: w.ifindex, direction: 'ingress' }));
    assert.equal(link.kind, 'tcx');
    const info = Link.info(link.fd);
    assert.equal(info.type, BPF_LINK_TYPE_TCX);
    assert.equal(info.progId, prog.id);
    assert.equal(info.ifindex, w.ifindex);
    assert.equal(info.attachType, BPF_TCX_INGRESS);
    assert.equal(info.direction, 'ingress');

    // bpftool 7.1 (Debian 12) predates tcx in `net show`; newer ones list it there. `link show` knows it either way.
    const links = bpftoolIn(NS_A, 'link', 'show') as { id: number; type: number | string; prog_id: number }[];
    const mine = links.find((l) => l.id === info.id);
    assert.ok(mine, 'bpftool link show lists the link');
    assert.ok(mine.type === 'tcx' || mine.type === BPF_LINK_TYPE_TCX, `link type ${String(mine.type)}`);
    assert.equal(mine.prog_id, prog.id);
    const net = bpftoolIn(NS_A, 'net', 'show') as { tcx?: { devname: string; kind: string; name: string; prog_id?: number }[] }[];
    const tcx = net[0]?.tcx;
    if (tcx !== undefined) {
      assert.ok(tcx.some((e) => e.devname === 'tdla0' && e.kind === 'tcx/ingress' && e.name === 'smoke_tc'));
    }

    const runs0 = runsOf(c);
    assert.ok(pingAFromB(), 'TC_ACT_OK lets the ping through');
    assert.ok(runsOf(c) > runs0, 'the program ran on real traffic');

    // Pin, close our fd: the program stays attached.
    link.pin(linkPin);
    link.close();
    const runs1 = runsOf(c);
    assert.ok(pingAFromB());
    assert.ok(runsOf(c) > runs1, 'still attached after close() thanks to the pin');

    // Re-adopt from the pin (an agent restart) and swap to the dropping program.
    adopted = Link.openPinned(linkPin);
    assert.equal(adopted.info().progId, prog.id);
    const alt = c.program('smoke_tc_alt');
    adopted.update(alt);
    assert.equal(adopted.info().progId, alt.id);
    assert.equal(pingAFromB(), false, 'TC_ACT_SHOT drops the ping');
    adopted.update(prog);
    assert.ok(pingAFromB());

    adopted.detach();
    adopted = undefined;
    assert.equal(fs.existsSync(linkPin), false, 'detach() removes the pin');
    const runs2 = runsOf(c);
    assert.ok(pingAFromB());
    assert.equal(runsOf(c), runs2, 'detached: traffic no longer runs the program');
  } finally {
    adopted?.close();
    c.close();
  }
});

test('an unpinned tcx link detaches when closed', () => {
  const w = wire();
  const c = Collection.load(SMOKE);
  try {
    const link = w.a.run(() => attachTcx({ program: c.program('smoke_tc'), ifindex: w.ifindex, direction: 'egress' }));
    assert.equal(link.info().direction, 'egress');
    const id = link.info().id;
    link.close();
    const links = bpftoolIn(NS_A, 'link', 'show') as { id: number }[];
    assert.equal(links.some((l) => l.id === id), false);
  } finally {
    c.close();
  }
});

test('attachProgram() reports a missing device clearly', () => {
  const w = wire();
  const c = Collection.load(SMOKE);
  try {
    assert.throws(
      () => w.a.run(() => attachProgram({ program: c.program('smoke_tc'), ifindex: 999_999, direction: 'ingress' })),
      (err: unknown) =>
        err instanceof KernelError && err.is('ENODEV') && /Cannot attach program "smoke_tc" to ingress of ifindex 999999/.test(err.message),
    );
  } finally {
    c.close();
  }
});

test('attachTc(): clsact + cls_bpf filter that runs, updates and detaches', () => {
  const w = wire();
  const c = Collection.load(SMOKE, { constants: { SMOKE_RET: TC_ACT_OK } });
  const prog = c.program('smoke_tc');
  const nl = Netlink.openIn(w.a);
  try {
    const link = w.a.run(() => attachTc({ program: prog, ifindex: w.ifindex, direction: 'ingress' }));
    assert.equal(link.kind, 'tc');
    assert.equal(link.fd, -1);
    const filters = nl.listBpfFilters(w.ifindex, 'ingress');
    assert.equal(filters.length, 1);
    const net = bpftoolIn(NS_A, 'net', 'show') as { tc: { devname: string; kind: string; name: string; id: number }[] }[];
    assert.ok(net[0]?.tc.some((e) => e.devname === 'tdla0' && e.kind === 'clsact/ingress' && e.id === prog.id));

    const runs0 = runsOf(c);
    assert.ok(pingAFromB());
    assert.ok(runsOf(c) > runs0, 'the filter ran on real traffic');

    link.update(c.program('smoke_tc_alt'));
    assert.equal(pingAFromB(), false, 'updated to the dropping program');
    assert.throws(() => link.pin(path.join(PIN_DIR, 'tc')), { code: 'TENDRIL_ERR_NOT_SUPPORTED' });

    link.detach();
    assert.equal(nl.listBpfFilters(w.ifindex, 'ingress').length, 0);
    assert.ok(pingAFromB());
  } finally {
    nl.close();
    c.close();
  }
});

test('attachProgram() auto: the tcx probe tells "no tcx" from a bad program; without tcx it falls back to tc', () => {
  const w = wire();
  assert.equal(haveTcx(), true, 'Linux >= 6.6 has tcx');
  const c = Collection.load(SMOKE, { constants: { SMOKE_RET: TC_ACT_OK } });
  try {
    // An XDP program on a tc hook: EINVAL from the kernel, but tcx exists, so no fallback and the real error.
    assert.throws(
      () => w.a.run(() => attachProgram({ program: c.program('smoke_xdp'), ifindex: w.ifindex, direction: 'ingress' })),
      (err: unknown) => err instanceof KernelError && err.code === 'TENDRIL_ERR_BPF' && err.is('EINVAL') && /with tcx/.test(err.message),
    );
    simulateNoTcxForTesting(true);
    try {
      assert.throws(
        () => w.a.run(() => attachTcx({ program: c.program('smoke_tc'), ifindex: w.ifindex, direction: 'ingress' })),
        (err: unknown) =>
          err instanceof KernelError && err.code === 'TENDRIL_ERR_NOT_SUPPORTED' && /tcx not supported \(needs Linux 6.6\)/.test(err.message),
      );
      const link = w.a.run(() => attachProgram({ program: c.program('smoke_tc'), ifindex: w.ifindex, direction: 'ingress' }));
      try {
        assert.equal(link.kind, 'tc');
        const runs0 = runsOf(c);
        assert.ok(pingAFromB());
        assert.ok(runsOf(c) > runs0, 'the fallback filter ran on real traffic');
      } finally {
        link.detach();
      }
      // Neither works: one error that says both.
      assert.throws(
        () => w.a.run(() => attachProgram({ program: c.program('smoke_xdp'), ifindex: w.ifindex, direction: 'ingress' })),
        /tcx not supported \(needs Linux 6.6\), tc fallback failed/,
      );
    } finally {
      simulateNoTcxForTesting(false);
    }
  } finally {
    c.close();
  }
});

test('BpfProgram pin/openPinned/fromId give the same program', () => {
  const c = Collection.load(SMOKE, { constants: { SMOKE_RET: 5 } });
  const p = path.join(PIN_DIR, 'prog_smoke_tc');
  try {
    fs.mkdirSync(PIN_DIR, { recursive: true });
    c.program('smoke_tc').pin(p);
    const opened = BpfProgram.openPinned(p);
    assert.equal(opened.id, c.program('smoke_tc').id);
    assert.equal(opened.name, 'smoke_tc');
    assert.equal(opened.run({ data: packet() }).retval, 5);
    opened.close();
    assert.throws(() => opened.fd, /closed/);
    const byId = BpfProgram.fromId(c.program('smoke_tc').id);
    assert.equal(byId.run({ data: packet() }).retval, 5);
    byId.close();
  } finally {
    c.close();
  }
});

test('removePinned() refuses paths outside a bpffs', () => {
  assert.throws(() => removePinned('/tmp'), /not on a bpf filesystem/);
  removePinned(`/sys/fs/bpf/tendril-test-${RUN}-never-created`);
});

test('ensureBpffs() mounts a bpffs where there is none and is a no-op where there is one', () => {
  const dir = `/tmp/tdlt-${RUN}-bpffs`;
  assert.equal(isBpffs(dir), false);
  try {
    ensureBpffs(dir);
    assert.ok(isBpffs(dir));
    ensureBpffs(dir);
    // Pins work there and removePinned() clears them.
    const c = Collection.load(SMOKE, { pinRoot: path.join(dir, 'sub') });
    c.close();
    assert.ok(fs.existsSync(path.join(dir, 'sub', 'smoke_pinned')));
    removePinned(path.join(dir, 'sub'));
    assert.equal(fs.existsSync(path.join(dir, 'sub')), false);
  } finally {
    if (isBpffs(dir)) umount2(dir, 0);
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
