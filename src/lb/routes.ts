// The operator's service API: services are validated and get their ClusterIP and node ports here, then stored.
import type { Store } from '../store/index.js';
import { HttpError, type ApiServer } from '../util/api.js';
import { ServiceAllocator } from './alloc.js';
import { LbError } from './errors.js';
import type { ServiceSpec } from './service.js';
import { endpointSliceResourceName, validateEndpointSlice, type EndpointSliceSpec } from './endpoint-slice.js';

const STATUS: Partial<Record<LbError['code'], number>> = {
  TENDRIL_ERR_SERVICE_INVALID: 400,
  TENDRIL_ERR_SERVICE_IP_TAKEN: 409,
  TENDRIL_ERR_NODEPORT_TAKEN: 409,
  TENDRIL_ERR_SERVICE_IP_EXHAUSTED: 507,
  TENDRIL_ERR_NODEPORT_EXHAUSTED: 507,
  TENDRIL_ERR_ENDPOINT_SLICE_INVALID: 400,
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
  registerEndpointSliceRoutes(api, store);
  return alloc;
}

/** Explicit backends of services without a selector: EndpointSlices, validated, stored as they are. */
function registerEndpointSliceRoutes(api: ApiServer, store: Store): void {
  api.route('GET', '/v1/endpointslices', async () => (await store.list<EndpointSliceSpec>('EndpointSlice')).items.map((r) => ({ ...r.value, revision: r.revision })));
  api.route('PUT', '/v1/endpointslices', async (req) => {
    const b = req.json() as { endpointSlice?: unknown };
    if (typeof b !== 'object' || b === null || b.endpointSlice === undefined) {
      throw new HttpError(400, 'EndpointSlice request must be {"endpointSlice": {namespace, name, labels, addressType, endpoints, ports}}', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    let slice: EndpointSliceSpec;
    try {
      slice = validateEndpointSlice(b.endpointSlice);
    } catch (err) {
      throw asHttp(err);
    }
    const r = await store.put<EndpointSliceSpec>('EndpointSlice', endpointSliceResourceName(slice.namespace, slice.name), slice);
    return { ...r.value, revision: r.revision };
  });
  api.route('DELETE', '/v1/endpointslices/{namespace}/{name}', async (req) => {
    const { namespace = '', name = '' } = req.params;
    if (!(await store.delete('EndpointSlice', endpointSliceResourceName(namespace, name)))) throw new HttpError(404, `EndpointSlice "${namespace}/${name}" not found in the cluster`, 'TENDRIL_ERR_ENDPOINT_SLICE_NOT_FOUND');
    return { deleted: `${namespace}/${name}` };
  });
}
