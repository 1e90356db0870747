// The kinds LB IPAM, L2 announcements and the egress gateway keep (LoadBalancerIPPool, ServiceStatus, L2Lease,
// EgressGatewayPolicy, their IPAMState claims) against the kit's real apiserver: the CRDs accept what the store
// writes and refuse malformed objects, objects users apply show in the store as its writers would have put them,
// and the operator's LB IPAM serves a core LoadBalancer Service from a TendrilLoadBalancerIPPool.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { KubernetesObjectApi, type KubernetesObject } from '@kubernetes/client-node';
import { pino } from 'pino';
import { connect, installCrds, KubernetesStore, type K8sConnection } from '../src/k8s/index.js';
import { StoreError } from '../src/store/index.js';
import { applyEgressPolicy, parseEgressPolicy, EGRESS_POOL_STATE, type EgressPoolState } from '../src/egress/index.js';
import type { EgressGatewayPolicyResource } from '../src/egress/policy.js';
import type { L2LeaseSpec } from '../src/l2/index.js';
import type { LbIpClaim, LbPoolResource, ServiceSpec, ServiceStatusSpec } from '../src/lb/index.js';
import { LbIpam } from '../src/operator/lb-ipam.js';
import { startKit, type Kit } from './lib/k8s-kit.js';
import { until } from './lib/proc.js';

const silent = pino({ level: 'silent' });
const PORT_BASE = 16800;
const invalid = (e: StoreError): boolean => e.code === 'TENDRIL_ERR_STORE_INVALID';

describe('kubernetes mode: LB IPAM, L2 and egress gateway kinds', { timeout: 300_000 }, () => {
  let kit: Kit | undefined;
  let conn: K8sConnection;
  let objects: KubernetesObjectApi;
  let store: KubernetesStore;

  before(async () => {
    kit = await startKit({ apiserverOnly: true, portBase: PORT_BASE });
    conn = connect(kit.kubeconfig);
    objects = KubernetesObjectApi.makeApiClient(conn.kc);
    const r = await installCrds(conn);
    for (const n of ['tendrilloadbalancerippools', 'tendrilservicestatuses', 'tendrill2leases', 'tendrilegressgatewaypolicies']) assert.ok(r.created.includes(`${n}.tendril.io`), n);
    store = new KubernetesStore(conn, { log: silent });
  });
  after(async () => {
    await store?.close();
    await kit?.down();
  });

  test('what the store writes of each kind reads back unchanged; malformed values are refused', async () => {
    const pool: LbPoolResource = { spec: { blocks: [{ cidr: '172.30.5.0/28' }, { start: '172.30.6.1', stop: '172.30.6.9' }], serviceSelector: { matchLabels: { tier: 'web' } }, allowFirstLastIPs: false, disabled: false } };
    const p1 = await store.put<LbPoolResource>('LoadBalancerIPPool', 'blue', pool, { expectedRevision: 0 });
    const withStatus: LbPoolResource = { ...pool, status: { conditions: [{ type: 'tendril.io/pool-conflict', status: 'False', reason: 'NoConflict', message: 'none' }], available: 23, used: 1 } };
    await store.put<LbPoolResource>('LoadBalancerIPPool', 'blue', withStatus, { expectedRevision: p1.revision });
    assert.deepEqual((await store.get<LbPoolResource>('LoadBalancerIPPool', 'blue'))?.value, withStatus, 'spec and status both kept');
    await assert.rejects(store.put('LoadBalancerIPPool', 'bad', { spec: { blocks: [] } }), invalid);

    const st: ServiceStatusSpec = { loadBalancer: { ingress: ['172.30.5.1'] }, conditions: [{ type: 'tendril.io/lb-ipam-request-satisfied', status: 'True', reason: 'satisfied', message: 'from pool blue' }] };
    await store.put<ServiceStatusSpec>('ServiceStatus', 'shop.web', st);
    assert.deepEqual((await store.get<ServiceStatusSpec>('ServiceStatus', 'shop.web'))?.value, st);
    await assert.rejects(store.put('ServiceStatus', 'shop.x', { loadBalancer: { ingress: ['not-an-ip'] }, conditions: [] }), invalid);

    const lease: L2LeaseSpec = { holder: 'node-a', renewTime: new Date().toISOString(), leaseDurationMs: 3000 };
    const l1 = await store.put<L2LeaseSpec>('L2Lease', '172.30.5.1', lease, { expectedRevision: 0 });
    await assert.rejects(store.put('L2Lease', '172.30.5.1', { ...lease, holder: 'node-b' }, { expectedRevision: 0 }), (e: StoreError) => e.code === 'TENDRIL_ERR_STORE_CONFLICT');
    assert.deepEqual((await store.get<L2LeaseSpec>('L2Lease', '172.30.5.1'))?.value, lease);
    await assert.rejects(store.put('L2Lease', '172.30.5.2', { holder: 'node-a', renewTime: 'x', leaseDurationMs: 'long' }), invalid);
    assert.equal(await store.delete('L2Lease', '172.30.5.1', { expectedRevision: l1.revision }), true);

    // The IPAMState shapes these features add: a LoadBalancer IP's claim and the egress IP pool.
    const claim: LbIpClaim = { owners: [{ service: 'shop.web', ports: ['TCP/80'] }, { service: 'shop.api', ports: ['TCP/443'] }], sharingKey: 'k' };
    await store.put<LbIpClaim>('IPAMState', 'lb-ip.172.30.5.1', claim);
    assert.deepEqual((await store.get<LbIpClaim>('IPAMState', 'lb-ip.172.30.5.1'))?.value, claim);
    const eg: EgressPoolState = { cidr: '192.0.2.0/28', assigned: { 'to-world': '192.0.2.1' } };
    await store.put<EgressPoolState>('IPAMState', EGRESS_POOL_STATE, eg);
    assert.deepEqual((await store.get<EgressPoolState>('IPAMState', EGRESS_POOL_STATE))?.value, eg);
  });

  test('egress gateway policies: the operator API\'s writes and kubectl-applied objects are the same store value', async () => {
    const doc = { apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name: 'via-api' }, spec: { selectors: [{ podSelector: { matchLabels: { app: 'db' } } }], destinationCIDRs: ['198.51.100.0/24'], egressGateway: { nodeSelector: { matchLabels: { gw: 'yes' } }, egressIP: '192.0.2.5' } } };
    const put = await applyEgressPolicy(store, doc);
    assert.deepEqual(put.value, { spec: parseEgressPolicy(doc), status: {} });
    const obj = (await objects.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilEgressGatewayPolicy', metadata: { name: 'via-api' } })) as unknown as { spec: Record<string, unknown> };
    assert.equal(obj.spec['name'], undefined, 'the name is metadata.name, not a spec field');
    const status = { gatewayNode: 'node-b', gatewayIP: '10.0.0.2', egressIP: '192.0.2.5' };
    await store.put<EgressGatewayPolicyResource>('EgressGatewayPolicy', 'via-api', { spec: put.value.spec, status }, { expectedRevision: put.revision });
    assert.deepEqual((await store.get<EgressGatewayPolicyResource>('EgressGatewayPolicy', 'via-api'))?.value, { spec: put.value.spec, status });

    const applied = { ...doc, metadata: { name: 'via-kubectl' }, spec: { ...doc.spec, excludedCIDRs: ['198.51.100.7/32'] } };
    await objects.create(applied as KubernetesObject);
    await until('the applied policy in the store', async () => (await store.get('EgressGatewayPolicy', 'via-kubectl')) !== undefined);
    assert.deepEqual((await store.get<EgressGatewayPolicyResource>('EgressGatewayPolicy', 'via-kubectl'))?.value, { spec: parseEgressPolicy(applied), status: {} });
    await assert.rejects(
      objects.create({ ...doc, metadata: { name: 'bad' }, spec: { ...doc.spec, destinationCIDRs: ['everywhere'] } } as KubernetesObject),
      (err: { code?: number }) => err.code === 422,
    );
  });

  test('LB IPAM on the Kubernetes store: a core LoadBalancer Service gets an IP of the pool selecting its labels', async () => {
    const ipam = new LbIpam({ store, log: silent });
    await ipam.start();
    try {
      await objects.create({ apiVersion: 'tendril.io/v2', kind: 'TendrilLoadBalancerIPPool', metadata: { name: 'green' }, spec: { blocks: [{ cidr: '172.31.9.0/29' }], serviceSelector: { matchLabels: { pool: 'green' } } } } as KubernetesObject);
      await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'lbns' } } as KubernetesObject);
      const svc = (name: string, labels: Record<string, string>, annotations: Record<string, string> = {}) =>
        ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'lbns', labels, annotations }, spec: { type: 'LoadBalancer', selector: { app: name }, ports: [{ port: 80, targetPort: 8080, protocol: 'TCP' }] } }) as KubernetesObject;
      await objects.create(svc('web', { pool: 'green' }, { 'lbipam.tendril.io/ips': '172.31.9.4' }));
      await objects.create(svc('other', { pool: 'none' }));
      const status = async (name: string) => (await store.get<ServiceStatusSpec>('ServiceStatus', name))?.value;
      await until('lbns.web served from pool green', async () => (await status('lbns.web'))?.loadBalancer.ingress[0] === '172.31.9.4');
      const s = (await store.get<ServiceSpec>('Service', 'lbns.web'))!.value;
      assert.deepEqual([s.labels, s.annotations], [{ pool: 'green' }, { 'lbipam.tendril.io/ips': '172.31.9.4' }]);
      await until('lbns.other pending (no pool selects it)', async () => {
        const o = await status('lbns.other');
        return o !== undefined && o.loadBalancer.ingress.length === 0 && o.conditions.some((c) => c.status === 'False');
      });
      await until('the pool counts the IP used', async () => (await store.get<LbPoolResource>('LoadBalancerIPPool', 'green'))?.value.status?.used === 1);
      const pool = (await objects.read({ apiVersion: 'tendril.io/v2', kind: 'TendrilLoadBalancerIPPool', metadata: { name: 'green' } })) as unknown as { status?: { used?: number } };
      assert.equal(pool.status?.used, 1, 'the status is on the object kubectl shows');
    } finally {
      await ipam.stop();
    }
  });
});
