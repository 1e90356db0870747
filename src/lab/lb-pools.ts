// `lab lb-pool add|list|del`: LoadBalancer IP pools through the operator (whose LB IPAM hands their IPs out), and
// the LoadBalancer IPs services got.
import type { LbPoolResource, ServiceStatusSpec } from '../lb/index.js';
import { LabError } from './errors.js';
import { loadLab } from './lab.js';
import { operator } from './security.js';

export interface LabLbPoolAdd {
  cidrs: string[];
  start?: string;
  stop?: string;
  /** matchLabels of the serviceSelector; empty: every LoadBalancer service. */
  selector: Record<string, string>;
  allowFirstLastIPs?: boolean;
  disabled?: boolean;
}

export type StoredPool = LbPoolResource & { name: string; revision: number };

export async function labLbPoolAdd(lab: string, name: string, o: LabLbPoolAdd): Promise<StoredPool> {
  const blocks: Array<Record<string, string>> = o.cidrs.map((cidr) => ({ cidr }));
  if (o.start !== undefined) blocks.push({ start: o.start, ...(o.stop !== undefined ? { stop: o.stop } : {}) });
  else if (o.stop !== undefined) throw new LabError('TENDRIL_ERR_LAB_INVALID', 'Invalid lb-pool: --stop needs --start');
  if (blocks.length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', 'Missing --cidr or --start/--stop: a pool needs at least one block');
  const spec: Record<string, unknown> = { blocks };
  if (Object.keys(o.selector).length > 0) spec['serviceSelector'] = { matchLabels: o.selector };
  if (o.allowFirstLastIPs !== undefined) spec['allowFirstLastIPs'] = o.allowFirstLastIPs;
  if (o.disabled !== undefined) spec['disabled'] = o.disabled;
  return operator(loadLab(lab)).request<StoredPool>('PUT', `/v1/lb-pools/${encodeURIComponent(name)}`, { spec });
}

export async function labLbPoolList(lab: string): Promise<StoredPool[]> {
  return operator(loadLab(lab)).get<StoredPool[]>('/v1/lb-pools');
}

export async function labLbPoolDel(lab: string, name: string): Promise<void> {
  await operator(loadLab(lab)).request('DELETE', `/v1/lb-pools/${encodeURIComponent(name)}`);
}

/** "namespace/name" -> the service's LoadBalancer status (LB IPAM's ServiceStatus). */
export async function labServiceStatuses(lab: string): Promise<Map<string, ServiceStatusSpec>> {
  const list = await operator(loadLab(lab)).get<Array<ServiceStatusSpec & { name: string }>>('/v1/service-status');
  return new Map(list.map((s) => [s.name.replace('.', '/'), s]));
}
