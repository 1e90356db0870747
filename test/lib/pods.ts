// A pod as the CNI plugin wires one, for tests that drive NodeDatapath directly: a netns, the pod interface
// wired by the datapath's own code (the one the CNI ADD runs), the endpoint added to the datapath.
import { Netns } from '../../src/kernel/netns/index.js';
import { wirePodInterface, type DatapathEndpoint, type NodeDatapath } from '../../src/datapath/index.js';

export interface TestPod {
  ns: string;
  ip: string;
  endpoint: DatapathEndpoint;
}

export interface PodPlan {
  nodeNs: Netns;
  dp: NodeDatapath;
  /** Netns name of the pod (the caller removes it). */
  podNs: string;
  /** First three octets of the node's /24, e.g. "10.230.0": the router is .1. */
  subnet: string;
  host: number;
  hostIfName: string;
  identity: number;
}

export function addTestPod(p: PodPlan): TestPod {
  const ip = `${p.subnet}.${p.host}`;
  const podNs = Netns.create(p.podNs);
  try {
    const link = wirePodInterface({
      netns: podNs,
      netnsPath: podNs.path,
      hostNetns: p.nodeNs,
      hostIfName: p.hostIfName,
      podIfName: 'eth0',
      ip,
      routerIP: `${p.subnet}.1`,
      mtu: p.dp.podMtu,
    });
    const endpoint: DatapathEndpoint = { id: p.host, ip, hostIfName: p.hostIfName, hostIfindex: link.hostIfindex, hostMac: link.hostMac, podMac: link.podMac, identity: p.identity };
    p.nodeNs.run(() => p.dp.addEndpoint(endpoint));
    return { ns: p.podNs, ip, endpoint };
  } finally {
    podNs.close();
  }
}

/** Deletes the named namespaces, newest first; a failure is reported and the rest are still deleted (for after()). */
export function deleteNamespaces(names: readonly string[]): void {
  for (const name of [...names].reverse()) {
    try {
      Netns.delete(name);
    } catch (err) {
      console.error(`cleanup: ${String(err)}`);
    }
  }
}
