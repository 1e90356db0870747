// The lab's IPAM settings: validated options, the operator's and agents' flags, and the lab playing
// kube-controller-manager (--ipam kubernetes: it writes each Node's pod CIDRs through the operator API).
import { ApiClient } from '../util/api-client.js';
import { LabError } from './errors.js';
import { labPaths } from './paths.js';

export interface LabIpam {
  /** cluster-pool (default): the operator carves CIDRs; kubernetes: the lab gives each node its CIDR. */
  mode?: 'cluster-pool' | 'kubernetes' | 'multi-pool';
  /** Node CIDR size (cluster-pool: --cluster-pool-ipv4-mask-size; kubernetes: what the lab hands out). Default 24. */
  maskSize?: number;
  /** Agents' --ipam-pre-allocate (default the agent's, 8). */
  preAllocate?: number;
  /** Agents' --ipam-hand-back-grace, e.g. "2s" (default the agent's, 30s). */
  handBackGrace?: string;
  /** Agents' --ipam-wait-timeout (kubernetes), e.g. "3s" (default the agent's, 60s). */
  waitTimeout?: string;
}

export function checkLabIpam(o: LabIpam | undefined): LabIpam {
  const v = o ?? {};
  if (v.mode !== undefined && v.mode !== 'cluster-pool' && v.mode !== 'kubernetes' && v.mode !== 'multi-pool') {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --ipam "${String(v.mode)}": expected cluster-pool, kubernetes or multi-pool`);
  }
  if (v.maskSize !== undefined && (!Number.isInteger(v.maskSize) || v.maskSize < 16 || v.maskSize > 30)) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --cluster-pool-mask-size ${String(v.maskSize)}: expected 16-30`);
  }
  if (v.preAllocate !== undefined && (!Number.isInteger(v.preAllocate) || v.preAllocate < 0)) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --ipam-pre-allocate ${String(v.preAllocate)}: expected a number of addresses >= 0`);
  }
  return v;
}

export function operatorIpamArgs(podCidr: string, ipam: LabIpam | undefined): string[] {
  return ['--ipam', ipam?.mode ?? 'cluster-pool', '--cluster-pool-ipv4-cidr', podCidr, '--cluster-pool-ipv4-mask-size', String(ipam?.maskSize ?? 24)];
}

export function agentIpamArgs(ipam: LabIpam | undefined): string[] {
  if (!ipam) return [];
  return [
    ...(ipam.mode ? ['--ipam', ipam.mode] : []),
    ...(ipam.preAllocate !== undefined ? ['--ipam-pre-allocate', String(ipam.preAllocate)] : []),
    ...(ipam.handBackGrace !== undefined ? ['--ipam-hand-back-grace', ipam.handBackGrace] : []),
    ...(ipam.waitTimeout !== undefined ? ['--ipam-wait-timeout', ipam.waitTimeout] : []),
  ];
}

/** kube-controller-manager's part: sets Node `node`'s pod CIDRs (the operator API refuses it in cluster-pool mode). */
export async function setNodePodCidrs(lab: string, node: string, podCIDRs: string[]): Promise<void> {
  const api = new ApiClient(labPaths(lab).operatorSocket, 'operator');
  // The operator's store may not answer in time just after it started (an apiserver still establishing the CRDs):
  // that refusal is "try again later", retried for a while; any other refusal is final.
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await api.request('PUT', `/v1/nodes/${encodeURIComponent(node)}/pod-cidrs`, { podCIDRs });
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'TENDRIL_ERR_STORE_UNAVAILABLE' || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
