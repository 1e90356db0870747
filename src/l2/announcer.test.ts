// Unit tests of the L2 announcer against the real local store (the responder map is an in-memory stand-in with the
// TypedMap verbs the announcer uses; test/datapath-l2 and test/lb-l2-lab run the real one): one holder per IP among
// several nodes, takeover of a lease whose holder stopped renewing, hand-back on stop, entries of IPs no service has.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { TypedMap } from '../kernel/bpf/index.js';
import { LocalStoreClient, LocalStoreServer, type Store } from '../store/index.js';
import { logger } from '../util/log.js';
import { GARP_ROUNDS, L2Announcer, type L2LeaseSpec } from './announcer.js';
import type { L2ResponderEntry } from './maps.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l2-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function memMap(): TypedMap<string, L2ResponderEntry> & { m: Map<string, L2ResponderEntry> } {
  const m = new Map<string, L2ResponderEntry>();
  return {
    m,
    lookup: (k: string) => m.get(k),
    put: (k: string, v: L2ResponderEntry) => void m.set(k, v),
    delete: (k: string) => m.delete(k),
    entries: () => [...m.entries()][Symbol.iterator](),
  } as unknown as TypedMap<string, L2ResponderEntry> & { m: Map<string, L2ResponderEntry> };
}

async function until(what: string, ok: () => boolean | Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!(await ok())) {
    if (Date.now() > deadline) assert.fail(`${what}: not within 10 s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('L2Announcer: one node of three holds each IP; a lease nobody renews is taken over; stop() hands it back', async () => {
  const socket = path.join(tmp, 's.sock');
  const server = new LocalStoreServer({ dataDir: path.join(tmp, 'd') });
  await server.listen({ socket });
  const clients: Store[] = [];
  const open = (): Store => {
    const c = new LocalStoreClient({ socket });
    clients.push(c);
    return c;
  };
  const store = open();
  const nodes = ['n1', 'n2', 'n3'].map((node, i) => ({
    node,
    map: memMap(),
    a: undefined as L2Announcer | undefined,
    dev: { ifindex: 10 + i, mac: `02:00:00:00:00:0${i + 1}` },
  }));
  try {
    // A lease held by a node that is gone (never renewed): taken over after its duration.
    await store.put<L2LeaseSpec>('L2Lease', '192.168.10.240', { holder: 'gone', renewTime: new Date().toISOString(), leaseDurationMs: 300 });
    await store.put('ServiceStatus', 'shop.web', { loadBalancer: { ingress: ['192.168.10.240', '192.168.10.241'] }, conditions: [] });
    for (const n of nodes) {
      n.a = new L2Announcer({ store: open(), node: n.node, log: logger('l2-test'), device: () => n.dev, responder: n.map, leaseDurationMs: 300, renewMs: 50 });
      n.a.start();
    }
    const holders = (ip: string): string[] => nodes.filter((n) => n.map.m.has(ip)).map((n) => n.node);
    await until('each IP answered by exactly one node', () => holders('192.168.10.240').length === 1 && holders('192.168.10.241').length === 1);
    const lease = (await store.get<L2LeaseSpec>('L2Lease', '192.168.10.240'))!.value;
    assert.notEqual(lease.holder, 'gone', 'the stale lease was taken over');
    const h = nodes.find((n) => n.node === lease.holder)!;
    const e = h.map.m.get('192.168.10.240')!;
    assert.deepEqual({ ifindex: e.ifindex, mac: e.mac }, h.dev, 'the holder answers with its device and MAC');
    assert.ok(e.expiresNs > process.hrtime.bigint(), 'valid for the lease from now on');
    // Stable: a few renew periods later still one holder, the same.
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(holders('192.168.10.240'), [h.node]);
    // The holder stops: it hands the lease back and another node answers.
    await h.a!.stop();
    assert.equal(h.map.m.has('192.168.10.240'), false);
    await until('another node took it', () => {
      const x = holders('192.168.10.240');
      return x.length === 1 && x[0] !== h.node;
    });
    // The service loses the IP: nobody answers for it, its lease goes.
    await store.put('ServiceStatus', 'shop.web', { loadBalancer: { ingress: ['192.168.10.241'] }, conditions: [] });
    await until('nobody answers for the released IP', async () => holders('192.168.10.240').length === 0 && (await store.get('L2Lease', '192.168.10.240')) === undefined);
  } finally {
    for (const n of nodes) await n.a?.stop();
    for (const c of clients) await c.close();
    await server.close();
  }
});

test('L2Announcer: only a node that may announce the IP (a local backend, externalTrafficPolicy Local) takes it; losing it hands it back', async () => {
  const socket = path.join(tmp, 'e.sock');
  const server = new LocalStoreServer({ dataDir: path.join(tmp, 'e') });
  await server.listen({ socket });
  const clients: Store[] = [];
  const open = (): Store => {
    const c = new LocalStoreClient({ socket });
    clients.push(c);
    return c;
  };
  const store = open();
  const IP = '192.168.10.242';
  // Which node has a local backend of the service (what ServiceManager.mayAnnounce answers in the agent).
  let localAt = 'n2';
  const nodes = ['n1', 'n2', 'n3'].map((node, i) => ({ node, map: memMap(), a: undefined as L2Announcer | undefined, dev: { ifindex: 20 + i, mac: `02:00:00:00:01:0${i + 1}` } }));
  try {
    await store.put('ServiceStatus', 'shop.local', { loadBalancer: { ingress: [IP] }, conditions: [] });
    for (const n of nodes) {
      n.a = new L2Announcer({ store: open(), node: n.node, log: logger('l2-test'), device: () => n.dev, responder: n.map, leaseDurationMs: 300, renewMs: 50, mayAnnounce: () => n.node === localAt });
      n.a.start();
    }
    const holders = (): string[] => nodes.filter((n) => n.map.m.has(IP)).map((n) => n.node);
    await until('n2 (the node with the backend) announces', async () => holders().join() === 'n2' && (await store.get<L2LeaseSpec>('L2Lease', IP))?.value.holder === 'n2');
    // Several lease durations: nobody else takes it (n2 renews) nor takes over.
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(holders(), ['n2']);
    // The backend moves to n3: n2 hands the lease back, n3 takes it (without waiting for a lease to expire).
    localAt = 'n3';
    await until('n3 announces instead', async () => holders().join() === 'n3' && (await store.get<L2LeaseSpec>('L2Lease', IP))?.value.holder === 'n3');
    // No node has a backend: nobody announces, the lease goes.
    localAt = 'none';
    await until('nobody announces', async () => holders().length === 0 && (await store.get('L2Lease', IP)) === undefined);
  } finally {
    for (const n of nodes) await n.a?.stop();
    for (const c of clients) await c.close();
    await server.close();
  }
});

test('L2Announcer: the node that takes an IP sends gratuitous ARP for it on its device, GARP_ROUNDS times, and no more while it holds it', async () => {
  const socket = path.join(tmp, 'g.sock');
  const server = new LocalStoreServer({ dataDir: path.join(tmp, 'g') });
  await server.listen({ socket });
  const store = new LocalStoreClient({ socket });
  const own = new LocalStoreClient({ socket });
  const IP = '192.168.10.243';
  const sent: Array<{ ifindex: number; op: number; sip: string; sha: string }> = [];
  const dev = { ifindex: 31, mac: '02:00:00:00:02:01' };
  let a: L2Announcer | undefined;
  try {
    await store.put('ServiceStatus', 'shop.garp', { loadBalancer: { ingress: [IP] }, conditions: [] });
    a = new L2Announcer({
      store: own, node: 'n1', log: logger('l2-test'), device: () => dev, responder: memMap(), leaseDurationMs: 300, renewMs: 50,
      sendFrame: (ifindex, f) => void sent.push({ ifindex, op: f.readUInt16BE(20), sip: [...f.subarray(28, 32)].join('.'), sha: f.subarray(22, 28).toString('hex') }),
    });
    a.start();
    await until('gratuitous ARP sent', () => sent.length >= 2 * GARP_ROUNDS);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(sent.length, 2 * GARP_ROUNDS, 'a request and a reply per round, no more while the lease is held');
    for (const s of sent) assert.deepEqual({ ifindex: s.ifindex, sip: s.sip, sha: s.sha }, { ifindex: 31, sip: IP, sha: '020000000201' });
    assert.deepEqual(sent.slice(0, 2).map((s) => s.op), [1, 2]);
    assert.equal(a.status().gratuitousArpSent, 2 * GARP_ROUNDS);
  } finally {
    await a?.stop();
    await store.close();
    await own.close();
    await server.close();
  }
});
