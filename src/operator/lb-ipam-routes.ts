// The operator's LoadBalancer IP pool API: pools are validated here and stored; LB IPAM (lb-ipam.ts) does the rest.
import { LbError, validateLbPool, validateLbPoolName, type LbPoolResource, type ServiceStatusSpec } from '../lb/index.js';
import type { Store } from '../store/index.js';
import { HttpError, type ApiServer } from '../util/api.js';
import type { LbIpam } from './lb-ipam.js';

function asHttp(err: unknown): unknown {
  if (err instanceof LbError) return new HttpError(err.code === 'TENDRIL_ERR_LB_POOL_NOT_FOUND' ? 404 : 400, err.message, err.code);
  return err;
}

export function registerLbPoolRoutes(api: ApiServer, store: Store, ipam: LbIpam): void {
  api.route('GET', '/v1/lb-pools', async () => (await store.list<LbPoolResource>('LoadBalancerIPPool')).items.map((r) => ({ name: r.name, ...r.value, revision: r.revision })));
  api.route('PUT', '/v1/lb-pools/{name}', async (req) => {
    const name = req.params['name'] ?? '';
    try {
      validateLbPoolName(name);
      const spec = validateLbPool(name, (req.json() as { spec?: unknown }).spec);
      const r = await store.put<LbPoolResource>('LoadBalancerIPPool', name, { spec });
      ipam.kick();
      return { name, ...r.value, revision: r.revision };
    } catch (err) {
      throw asHttp(err);
    }
  });
  api.route('DELETE', '/v1/lb-pools/{name}', async (req) => {
    const name = req.params['name'] ?? '';
    if (!(await store.delete('LoadBalancerIPPool', name))) throw new HttpError(404, `LoadBalancer IP pool "${name}" not found`, 'TENDRIL_ERR_LB_POOL_NOT_FOUND');
    ipam.kick();
    return { deleted: name };
  });
  api.route('GET', '/v1/service-status', async () => (await store.list<ServiceStatusSpec>('ServiceStatus')).items.map((r) => ({ name: r.name, ...r.value })));
  api.route('GET', '/v1/lb-ipam', () => ipam.status());
}
