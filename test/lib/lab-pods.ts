// What the lab IPAM tests ask of a lab pod and a node row: one ping, CIDR membership, the agent's view of a node.
import { ApiClient } from '../../src/util/api-client.js';
import { execCapture, loadLab, type LabPod } from '../../src/lab/lab.js';
import { cidrContains, parseCidr, parseIPv4 } from '../../src/util/ip.js';

/** One echo request from the pod, answered within 2 s. */
export function ping(from: LabPod, ip: string): boolean {
  return execCapture(from.netns, ['ping', '-c', '1', '-W', '2', ip]).status === 0;
}

export function inCidr(ip: string, cidr: string): boolean {
  return cidrContains(parseCidr(cidr), parseIPv4(ip));
}

/** A row of an agent's GET /v1/cluster/nodes. */
export interface NodeRow {
  name: string;
  podCIDRs: string[];
  ipam?: { pools: Record<string, { requested: number; allocated: string[] }> };
}

/** The agent of `node` in the lab. */
export function agent(lab: string, node: string): ApiClient {
  return new ApiClient(loadLab(lab).nodes.find((n) => n.name === node)!.socket);
}

/** `node` as the agent of `from` sees it. */
export async function nodeRow(lab: string, node: string, from = node): Promise<NodeRow | undefined> {
  return (await agent(lab, from).get<NodeRow[]>('/v1/cluster/nodes')).find((n) => n.name === node);
}
