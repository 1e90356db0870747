// A pod as the CNI plugin wires one, for tests that drive NodeDatapath directly: a netns, a veth with its peer
// born in the pod, the pod's /32 and routes via the router, the endpoint added to the datapath.
import { Netlink } from '../../src/kernel/netlink/index.js';
import { Netns } from '../../src/kernel/netns/index.js';
import type { DatapathEndpoint, NodeDatapath } from '../../src/datapath/index.js';
import { randomMac } from '../../src/util/ip.js';

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
  const router = `${p.subnet}.1`;
  const podNs = Netns.create(p.podNs);
  const nl = Netlink.openIn(p.nodeNs);
  const pnl = Netlink.openIn(podNs);
  try {
    nl.createVeth({ name: p.hostIfName, peerName: 'eth0', peerNetns: podNs, mtu: p.dp.podMtu, mac: randomMac(), peerMac: randomMac() });
    const podLink = pnl.getLink('eth0')!;
    pnl.setLink('lo', { up: true });
    pnl.addAddress(podLink.index, `${ip}/32`);
    pnl.setLink(podLink.index, { up: true });
    pnl.addRoute({ dst: `${router}/32`, ifindex: podLink.index, scope: 'link' });
    pnl.addRoute({ dst: '0.0.0.0/0', gateway: router, ifindex: podLink.index });
    nl.setLink(p.hostIfName, { up: true });
    const hostLink = nl.getLink(p.hostIfName)!;
    const endpoint: DatapathEndpoint = { id: p.host, ip, hostIfName: p.hostIfName, hostIfindex: hostLink.index, hostMac: hostLink.mac, podMac: podLink.mac, identity: p.identity };
    p.nodeNs.run(() => p.dp.addEndpoint(endpoint));
    return { ns: p.podNs, ip, endpoint };
  } finally {
    pnl.close();
    nl.close();
    podNs.close();
  }
}
