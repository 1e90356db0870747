// The L2 responder of cil_from_netdev (bpf/lib/l2announce.h), run on crafted ARP frames through BPF_PROG_TEST_RUN
// (root; nothing is attached): a request for an announced IP on its device becomes the reply with the entry's MAC;
// other IPs, other devices, replies and unicast requests to another MAC go on to the stack untouched.
import { rmSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { Collection, skbCtx, type BpfProgram, type TypedMap } from '../src/kernel/bpf/index.js';
import { L2_RESPONDER_MAP, l2ResponderEntryCodec, l2ResponderKeyCodec, type L2ResponderEntry } from '../src/l2/index.js';
import { formatIPv4, parseIPv4, parseMac } from '../src/util/ip.js';

const TC_ACT_OK = 0;
const TC_ACT_REDIRECT = 7;
const root = fileURLToPath(new URL('../../', import.meta.url));
const pinRoot = `/sys/fs/bpf/tendril-test-l2-${process.pid}`;
const DEV = 1;
const LB_IP = '172.30.255.10';
const OTHER_DEV_IP = '172.30.255.12';
const NODE_MAC = '02:00:c0:a8:00:02';
const CLIENT_MAC = '02:00:c0:a8:00:fe';
const CLIENT_IP = '192.168.0.254';

let host: Collection | undefined;
let prog: BpfProgram;
let responder: TypedMap<string, L2ResponderEntry>;

function arp(o: { op?: number; dmac?: string; tip: string; sip?: string }): Buffer {
  const b = Buffer.alloc(14 + 28);
  parseMac(o.dmac ?? 'ff:ff:ff:ff:ff:ff').copy(b, 0);
  parseMac(CLIENT_MAC).copy(b, 6);
  b.writeUInt16BE(0x0806, 12);
  b.writeUInt16BE(1, 14); // Ethernet
  b.writeUInt16BE(0x0800, 16);
  b[18] = 6;
  b[19] = 4;
  b.writeUInt16BE(o.op ?? 1, 20);
  parseMac(CLIENT_MAC).copy(b, 22);
  b.writeUInt32BE(parseIPv4(o.sip ?? CLIENT_IP), 28);
  // target MAC zero in a request
  b.writeUInt32BE(parseIPv4(o.tip), 38);
  return b;
}

const mac = (b: Buffer, at: number): string => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

const later = (): bigint => process.hrtime.bigint() + 60_000_000_000n;

function run(data: Buffer, ifindex = DEV): { retval: number; out: Buffer } {
  const r = prog.run({ data, ctx: skbCtx({ ifindex }) });
  return { retval: r.retval, out: r.data };
}

before(() => {
  assert.equal(process.getuid?.(), 0, 'test/datapath-l2.test.ts needs root (BPF_PROG_LOAD, bpffs)');
  mkdirSync(pinRoot, { recursive: true });
  host = Collection.load(root + 'build/bpf/host.o', { pinRoot });
  prog = host.program('cil_from_netdev');
  responder = host.map(L2_RESPONDER_MAP).typed(l2ResponderKeyCodec, l2ResponderEntryCodec);
  responder.put(LB_IP, { ifindex: DEV, mac: NODE_MAC, expiresNs: later() });
  responder.put(OTHER_DEV_IP, { ifindex: DEV + 100, mac: NODE_MAC, expiresNs: later() });
});

after(() => {
  host?.close();
  rmSync(pinRoot, { recursive: true, force: true });
});

test('cil_from_netdev answers an ARP request for an announced LoadBalancer IP with the entry MAC', () => {
  const r = run(arp({ tip: LB_IP }));
  assert.equal(r.retval, TC_ACT_REDIRECT, 'the reply goes back out of the device');
  const o = r.out;
  assert.equal(mac(o, 0), CLIENT_MAC, 'Ethernet destination: the asker');
  assert.equal(mac(o, 6), NODE_MAC, 'Ethernet source: the announcing MAC');
  assert.equal(o.readUInt16BE(12), 0x0806);
  assert.equal(o.readUInt16BE(20), 2, 'ARP reply');
  assert.equal(mac(o, 22), NODE_MAC, 'sender MAC');
  assert.equal(formatIPv4(o.readUInt32BE(28)), LB_IP, 'sender IP: the LoadBalancer IP');
  assert.equal(mac(o, 32), CLIENT_MAC, 'target MAC');
  assert.equal(formatIPv4(o.readUInt32BE(38)), CLIENT_IP, 'target IP: the asker');
  // A unicast refresh to the announcing MAC is answered as well.
  assert.equal(run(arp({ tip: LB_IP, dmac: NODE_MAC })).retval, TC_ACT_REDIRECT);
});

test('cil_from_netdev leaves other ARP to the stack: unknown IP, other device, replies, unicast to another MAC', () => {
  const cases: Array<[string, Buffer, number]> = [
    ['an IP not announced', arp({ tip: '172.30.255.11' }), DEV],
    ['an IP announced on another device', arp({ tip: OTHER_DEV_IP }), DEV],
    ['an ARP reply', arp({ tip: LB_IP, op: 2 }), DEV],
    ['a unicast request to another MAC', arp({ tip: LB_IP, dmac: '02:00:00:00:00:99' }), DEV],
  ];
  for (const [what, data, ifindex] of cases) {
    const r = run(data, ifindex);
    assert.equal(r.retval, TC_ACT_OK, what);
    assert.deepEqual(r.out, data, `${what}: the frame is unchanged`);
  }
});

test('cil_from_netdev stops answering once the entry is deleted (the lease moved) or has expired (the agent died)', () => {
  responder.delete(LB_IP);
  assert.equal(run(arp({ tip: LB_IP })).retval, TC_ACT_OK);
  responder.put(LB_IP, { ifindex: DEV, mac: NODE_MAC, expiresNs: process.hrtime.bigint() - 1n });
  const data = arp({ tip: LB_IP });
  const r = run(data);
  assert.equal(r.retval, TC_ACT_OK, 'an expired entry is not answered');
  assert.deepEqual(r.out, data);
  responder.put(LB_IP, { ifindex: DEV, mac: NODE_MAC, expiresNs: later() });
});
