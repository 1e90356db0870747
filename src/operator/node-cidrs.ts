// PUT /v1/nodes/{name}/pod-cidrs: in --ipam kubernetes mode the node CIDRs are written by someone else
// (kube-controller-manager's role, the lab's in tests) through the operator's API, as Node.spec.podCIDRs is.
import type { NodeSpec, Store } from '../store/index.js';
import { HttpError, type ApiServer } from '../util/api.js';
import { parseStrictCidr, overlaps } from './cluster-pool.js';
import { formatCidr, type Cidr } from '../util/ip.js';

const MAX_RETRIES = 20;

export function registerNodeCidrRoutes(api: ApiServer, store: Store, mode: () => 'cluster-pool' | 'kubernetes' | 'multi-pool'): void {
  api.route('PUT', '/v1/nodes/{name}/pod-cidrs', async (req) => {
    const name = req.params['name']!;
    if (mode() !== 'kubernetes') {
      throw new HttpError(409, `Cannot set the pod CIDRs of node "${name}": the operator allocates them (--ipam ${mode()}); give them only with --ipam kubernetes`, 'TENDRIL_ERR_CONFLICT');
    }
    const b = req.json() as { podCIDRs?: unknown };
    if (typeof b !== 'object' || b === null || !Array.isArray(b.podCIDRs) || b.podCIDRs.length === 0 || !b.podCIDRs.every((c) => typeof c === 'string')) {
      throw new HttpError(400, 'Pod CIDR change must be {"podCIDRs": ["10.244.1.0/24", …]} (at least one)', 'TENDRIL_ERR_INVALID_REQUEST');
    }
    const cidrs: Cidr[] = [];
    for (const text of b.podCIDRs as string[]) {
      const c = parseStrictCidr(text, (why) => {
        throw new HttpError(400, `Invalid pod CIDR "${text}" for node "${name}": ${why}`, 'TENDRIL_ERR_INVALID_REQUEST');
      });
      if (c.bits > 30) throw new HttpError(400, `Invalid pod CIDR "${text}" for node "${name}": a node needs at least a /30`, 'TENDRIL_ERR_INVALID_REQUEST');
      if (cidrs.some((o) => overlaps(o, c))) throw new HttpError(400, `Invalid pod CIDRs for node "${name}": "${text}" overlaps another of them`, 'TENDRIL_ERR_INVALID_REQUEST');
      cidrs.push(c);
    }
    const podCIDRs = cidrs.map(formatCidr);
    for (let attempt = 0; ; attempt++) {
      const all = (await store.list<NodeSpec>('Node')).items;
      for (const other of all) {
        if (other.name === name) continue;
        const clash = (other.value.podCIDRs ?? []).find((t) => {
          try {
            return cidrs.some((c) => overlaps(c, parseStrictCidr(t, () => { throw new Error(); })));
          } catch {
            return false;
          }
        });
        if (clash) throw new HttpError(409, `Cannot give node "${name}" ${podCIDRs.join(', ')}: node "${other.name}" has ${clash}`, 'TENDRIL_ERR_CONFLICT');
      }
      const cur = all.find((r) => r.name === name);
      const value: NodeSpec = { ...(cur?.value ?? { name, addresses: [] }), podCIDRs };
      try {
        const r = await store.put<NodeSpec>('Node', name, value, { expectedRevision: cur?.revision ?? 0 });
        return { name, podCIDRs, revision: r.revision };
      } catch (err) {
        if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_CONFLICT' || attempt >= MAX_RETRIES) throw err;
      }
    }
  });
}
