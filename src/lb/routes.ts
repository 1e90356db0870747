// The operator's service API: services are validated and get their ClusterIP and node ports here, then stored.
import type { Store } from '../store/index.js';
import { HttpError, type ApiServer } from '../util/api.js';
import { ServiceAllocator } from './alloc.js';
import { LbError } from './errors.js';
import type { ServiceSpec } from './service.js';

const STATUS: Partial<Record<LbError['code'], number>> = {
  TENDRIL_ERR_SERVICE_INVALID: 400,
  TENDRIL_ERR_SERVICE_IP_TAKEN: 409,
  TENDRIL_ERR_NODEPORT_TAKEN: 409,
  TENDRIL_ERR_SERVICE_IP_EXHAUSTED: 507,
  TENDRIL_ERR_NODEPORT_EXHAUSTED: 507,
};

function asHttp(err: unknown): unknown {
  if (err instanceof LbError) return new HttpError(STATUS[err.code] ?? 500, err.message, err.code);
  return err;
}

export function registerServiceRoutes(api: ApiServer, store: Store, serviceCidr?: string): ServiceAllocator {
  const alloc = new ServiceAllocator(store, serviceCidr);
  api.route('GET', '/v1/services', async () => (await store.list<ServiceSpec>('Service')).items.map((r) => ({ ...r.value, revision: r.revision })));
  api.route('PUT', '/v1/services', async (req) => {
    const b = req.json() as { service?: unknown };
    if (typeof b !== 'object' || b === null || b.service === undefined) {
      throw new HttpError(400, 'Service request must be {"service": {namespace, name, type, ports, selector, …}}', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    const r = await alloc.apply(b.service).catch((err: unknown) => Promise.reject(asHttp(err)));
    return { ...r.value, revision: r.revision };
  });
  api.route('DELETE', '/v1/services/{namespace}/{name}', async (req) => {
    const { namespace = '', name = '' } = req.params;
    if (!(await alloc.remove(namespace, name))) throw new HttpError(404, `Service "${namespace}/${name}" not found in the cluster`, 'TENDRIL_ERR_SERVICE_NOT_FOUND');
    return { deleted: `${namespace}/${name}` };
  });
  return alloc;
}
