// The operator's egress gateway API: policies validated and stored here; the operator's loop gives them a status.
import type { Store } from '../store/index.js';
import { HttpError, type ApiServer } from '../util/api.js';
import { EgressError } from './errors.js';
import { applyEgressPolicy, deleteEgressPolicy, listEgressPolicies } from './store.js';

const STATUS: Partial<Record<EgressError['code'], number>> = {
  TENDRIL_ERR_EGRESS_POLICY_INVALID: 400,
  TENDRIL_ERR_EGRESS_POLICY_NOT_FOUND: 404,
};

function asHttp(err: unknown): unknown {
  if (err instanceof EgressError) return new HttpError(STATUS[err.code] ?? 500, err.message, err.code);
  return err;
}

export function registerEgressRoutes(api: ApiServer, store: Store): void {
  api.route('GET', '/v1/egress-gateway-policies', () => listEgressPolicies(store));
  api.route('PUT', '/v1/egress-gateway-policies', async (req) => {
    const b = req.json() as { policy?: unknown };
    if (typeof b !== 'object' || b === null || b.policy === undefined) {
      throw new HttpError(400, 'Egress gateway policy request must be {"policy": {apiVersion, kind, metadata, spec}}', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    const r = await applyEgressPolicy(store, b.policy).catch((err: unknown) => Promise.reject(asHttp(err)));
    return { ...r.value, revision: r.revision };
  });
  api.route('DELETE', '/v1/egress-gateway-policies/{name}', async (req) => {
    const name = req.params['name'] ?? '';
    await deleteEgressPolicy(store, name).catch((err: unknown) => Promise.reject(asHttp(err)));
    return { deleted: name };
  });
}
