// Unit tests of LB IPAM against the real local store: pool choice by selector, requested IPs, sharing, conflicts,
// exhaustion with a reason, release, and no IP handed out twice across operators and restarts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { LocalStoreClient, LocalStoreServer, type Store } from '../store/index.js';
import { LbError, ServiceAllocator, validateLbPool, type LbPoolResource, type ServiceStatusSpec } from '../lb/index.js';
import { logger } from '../util/log.js';
import { LbIpam } from './lb-ipam.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-lbipam-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
const log = logger('lb-ipam-test');

async function withStore(name: string, fn: (open: () => Store) => Promise<void>): Promise<void> {
  const socket = path.join(tmp, `${name}.sock`);
  const server = new LocalStoreServer({ dataDir: path.join(tmp, name) });
  await server.listen({ socket });
  const clients: LocalStoreClient[] = [];
  try {
    await fn(() => {
      const c = new LocalStoreClient({ socket });
      clients.push(c);
      return c;
    });
  } finally {
    for (const c of clients) await c.close();
    await server.close();
  }
}

const lbSvc = (name: string, over: Record<string, unknown> = {}): Record<string, unknown> => ({ namespace: 'shop', name, type: 'LoadBalancer', selector: { app: name }, ports: [{ port: 80 }], ...over });

async function pool(store: Store, name: string, spec: Record<string, unknown>): Promise<void> {
  await store.put<LbPoolResource>('LoadBalancerIPPool', name, { spec: validateLbPool(name, spec) });
}

/** Runs passes until the status of `svc` satisfies `ok` (the watch triggers them; bounded by one deadline). */
async function statusOf(store: Store, ipam: LbIpam, svc: string, ok: (s: ServiceStatusSpec | undefined) => boolean): Promise<ServiceStatusSpec | undefined> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    ipam.kick();
    await ipam.settled();
    const s = (await store.get<ServiceStatusSpec>('ServiceStatus', `shop.${svc}`))?.value;
    if (ok(s) || Date.now() > deadline) return s;
    await new Promise((r) => setTimeout(r, 20));
  }
}
const hasIp = (s: ServiceStatusSpec | undefined): boolean => (s?.loadBalancer.ingress.length ?? 0) > 0;
const isPending = (s: ServiceStatusSpec | undefined): boolean => s !== undefined && s.loadBalancer.ingress.length === 0;

test('validateLbPool() fills in defaults and names the wrong field', () => {
  assert.deepEqual(validateLbPool('p', { blocks: [{ cidr: '172.30.0.0/30' }] }), { blocks: [{ cidr: '172.30.0.0/30' }], allowFirstLastIPs: false, disabled: false });
  const cases: [unknown, RegExp][] = [
    [{ blocks: [] }, /blocks: expected at least one block/],
    [{ blocks: [{ cidr: '172.30.0.0/33' }] }, /blocks\[0\]\.cidr "172\.30\.0\.0\/33"/],
    [{ blocks: [{ cidr: '172.30.0.0/30', start: '172.30.0.1' }] }, /either cidr or start\/stop/],
    [{ blocks: [{ start: '172.30.0.9', stop: '172.30.0.1' }] }, /stop 172\.30\.0\.1 is below start 172\.30\.0\.9/],
    [{ blocks: [{ cidr: '172.30.0.0/30' }], serviceSelector: { matchExpressions: [{ key: 'a', operator: 'Has' }] } }, /operator "Has" is not one of/],
    [{ blocks: [{ cidr: '172.30.0.0/30' }], disabled: 'yes' }, /disabled "yes" is not true or false/],
  ];
  for (const [input, re] of cases) assert.throws(() => validateLbPool('p', input), (e: unknown) => e instanceof LbError && e.code === 'TENDRIL_ERR_LB_POOL_INVALID' && re.test(e.message), String(re));
});

test('LbIpam gives a LoadBalancer service an IP of the pool that selects it, the requested one by annotation, and frees it on delete', async () => {
  await withStore('basic', async (open) => {
    const store = open();
    const alloc = new ServiceAllocator(store);
    const ipam = new LbIpam({ store, log });
    await ipam.start();
    try {
      await pool(store, 'blue', { blocks: [{ cidr: '172.30.1.0/30' }], serviceSelector: { matchLabels: { color: 'blue' } } });
      await pool(store, 'any', { blocks: [{ start: '172.30.2.10', stop: '172.30.2.11' }] });
      await alloc.apply(lbSvc('web', { labels: { color: 'blue' } }));
      // Both pools select it ("any" selects everything): an IP of one of them; the /30 without its first and last.
      let s = await statusOf(store, ipam, 'web', hasIp);
      assert.ok(s && ['172.30.1.1', '172.30.1.2', '172.30.2.10'].includes(s.loadBalancer.ingress[0]!), JSON.stringify(s));
      await alloc.apply(lbSvc('red', { labels: { color: 'red' } }));
      s = await statusOf(store, ipam, 'red', hasIp);
      assert.match(s!.loadBalancer.ingress[0]!, /^172\.30\.2\.1[01]$/, 'only the unselective pool matches');
      await alloc.apply(lbSvc('pinned', { labels: { color: 'blue' }, annotations: { 'lbipam.tendril.io/ips': '172.30.1.2' } }));
      s = await statusOf(store, ipam, 'pinned', (x) => hasIp(x) || isPending(x));
      const web = (await store.get<ServiceStatusSpec>('ServiceStatus', 'shop.web'))!.value.loadBalancer.ingress[0];
      if (web === '172.30.1.2') assert.equal(s!.conditions[0]!.reason, 'already_allocated');
      else assert.deepEqual(s!.loadBalancer.ingress, ['172.30.1.2']);
      // Not in a selecting pool: pending with the reason.
      await alloc.apply(lbSvc('outside', { annotations: { 'lbipam.tendril.io/ips': '172.30.1.1' } }));
      s = await statusOf(store, ipam, 'outside', isPending);
      assert.equal(s!.conditions[0]!.reason, 'not_in_pool');
      // Delete: the IP is released and the status goes.
      const redIp = (await store.get<ServiceStatusSpec>('ServiceStatus', 'shop.red'))!.value.loadBalancer.ingress[0]!;
      await alloc.remove('shop', 'red');
      const deadline = Date.now() + 10_000;
      while ((await store.get('IPAMState', `lb-ip.${redIp}`)) && Date.now() < deadline) {
        ipam.kick();
        await ipam.settled();
      }
      assert.equal(await store.get('IPAMState', `lb-ip.${redIp}`), undefined, 'claim released');
      assert.equal(await store.get('ServiceStatus', 'shop.red'), undefined, 'status removed');
    } finally {
      await ipam.stop();
    }
  });
});

test('LbIpam: an exhausted pool leaves the service pending with a reason; sharing-key services share an IP unless ports clash', async () => {
  await withStore('exhaust', async (open) => {
    const store = open();
    const alloc = new ServiceAllocator(store);
    const ipam = new LbIpam({ store, log });
    await ipam.start();
    try {
      await pool(store, 'tiny', { blocks: [{ cidr: '172.30.3.0/31' }] });
      await alloc.apply(lbSvc('a', { annotations: { 'lbipam.tendril.io/sharing-key': 'k' } }));
      await alloc.apply(lbSvc('b', { ports: [{ port: 443 }], annotations: { 'lbipam.tendril.io/sharing-key': 'k' } }));
      const a = await statusOf(store, ipam, 'a', hasIp);
      const b = await statusOf(store, ipam, 'b', hasIp);
      assert.deepEqual(b!.loadBalancer.ingress, a!.loadBalancer.ingress, 'same key, ports 80 and 443: shared');
      // Same key but port 80 again: a clash, so the other address.
      await alloc.apply(lbSvc('c', { annotations: { 'lbipam.tendril.io/sharing-key': 'k' } }));
      const c = await statusOf(store, ipam, 'c', hasIp);
      assert.notDeepEqual(c!.loadBalancer.ingress, a!.loadBalancer.ingress);
      // The /31 (both usable) is now full.
      await alloc.apply(lbSvc('d'));
      const d = await statusOf(store, ipam, 'd', isPending);
      assert.equal(d!.conditions[0]!.reason, 'out_of_ips');
      assert.match(d!.conditions[0]!.message, /Every IP of the pools selecting service "shop\/d" \("tiny"\) is in use/);
      assert.equal(ipam.status().pending['shop/d'], d!.conditions[0]!.message);
      // A second operator (a restart) sees the claims: nothing is handed out twice.
      const other = new LbIpam({ store: open(), log });
      await other.start();
      other.kick();
      await other.settled();
      await other.stop();
      const claims = (await store.list<{ owners: { service: string }[] }>('IPAMState')).items.filter((r) => r.name.startsWith('lb-ip.'));
      assert.equal(claims.length, 2);
      const owners = claims.flatMap((r) => r.value.owners.map((o) => o.service)).sort();
      assert.deepEqual(owners, ['shop/a', 'shop/b', 'shop/c']);
      // Freeing c's address gives it to d.
      await alloc.remove('shop', 'c');
      const d2 = await statusOf(store, ipam, 'd', hasIp);
      assert.deepEqual(d2!.loadBalancer.ingress, c!.loadBalancer.ingress);
    } finally {
      await ipam.stop();
    }
  });
});

test('LbIpam flags an overlapping pool as conflicting and hands out none of its IPs', async () => {
  await withStore('conflict', async (open) => {
    const store = open();
    const alloc = new ServiceAllocator(store);
    const ipam = new LbIpam({ store, log });
    await ipam.start();
    try {
      await pool(store, 'a-first', { blocks: [{ cidr: '172.30.4.0/30' }], disabled: true });
      await pool(store, 'b-second', { blocks: [{ start: '172.30.4.3', stop: '172.30.4.9' }] });
      await alloc.apply(lbSvc('x'));
      const s = await statusOf(store, ipam, 'x', isPending);
      assert.equal(s!.conditions[0]!.reason, 'no_pool', 'the disabled pool gives nothing, the conflicting one neither');
      const p = (await store.get<LbPoolResource>('LoadBalancerIPPool', 'b-second'))!.value.status!;
      assert.equal(p.conditions[0]!.status, 'True');
      assert.match(p.conditions[0]!.message, /overlaps pool "a-first"/);
      assert.equal(ipam.status().pools.find((q) => q.name === 'b-second')!.conflict, 'overlaps pool "a-first"');
      // The overlap gone: the pool serves.
      await store.delete('LoadBalancerIPPool', 'a-first');
      const s2 = await statusOf(store, ipam, 'x', hasIp);
      assert.match(s2!.loadBalancer.ingress[0]!, /^172\.30\.4\.[3-9]$/);
    } finally {
      await ipam.stop();
    }
  });
});
