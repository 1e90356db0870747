// Lab IP pools (--ipam multi-pool): TendrilPodIPPools written, listed and deleted through the operator API, which
// validates them (overlaps refused) and refuses to delete a pool in use.
import { ApiClient } from '../util/api-client.js';
import type { PoolView } from '../operator/multi-pool.js';
import { LabError } from './errors.js';
import { loadLab } from './lab.js';
import { labPaths } from './paths.js';

function operator(lab: string): ApiClient {
  const st = loadLab(lab);
  if (st.ipam?.mode !== 'multi-pool') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" does not use --ipam multi-pool: IP pools need it (lab up --ipam multi-pool)`);
  return new ApiClient(labPaths(lab).operatorSocket, 'operator');
}

export async function labPoolAdd(lab: string, name: string, cidrs: string[], maskSize: number | undefined): Promise<{ name: string; cidrs: string[]; maskSize: number }> {
  return operator(lab).request('PUT', `/v1/pools/${encodeURIComponent(name)}`, { cidrs, ...(maskSize !== undefined ? { maskSize } : {}) });
}

export async function labPoolList(lab: string): Promise<PoolView[]> {
  return operator(lab).get<PoolView[]>('/v1/pools');
}

export async function labPoolDel(lab: string, name: string): Promise<{ deleted: string }> {
  return operator(lab).request('DELETE', `/v1/pools/${encodeURIComponent(name)}`);
}
