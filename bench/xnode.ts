// Cross-node pod pairs: plain-kernel baselines (routing, VXLAN) built in the lab's shape, and two-node Tendril labs.
import { labDown, labUp, podAdd, type RoutingMode } from '../src/lab/lab.js';
import type { BenchNetns } from './netns.js';
import { BenchError, inNs, run } from './proc.js';
import type { Pair } from './scenarios.js';

export type XBaselineKind = 'xroute' | 'xvxlan';

/** What the lab uses: 1500 on the underlay, 50 less for the VXLAN header in tunnel mode (pods and device alike). */
const UNDERLAY_MTU = 1500;
const VXLAN_OVERHEAD = 50;
const VXLAN_VNI = 42;
const VXLAN_PORT = 8472;

interface XNode {
  ns: string;
  pod: string;
  /** Underlay address (on eth0, a veth into the underlay bridge). */
  ip: string;
  /** Pod subnet of the node (/24): the gateway is .1 on the node's side of the pod veth, the pod is .3. */
  podNet: string;
  gw: string;
  podIp: string;
  /** xvxlan: the node's address on vx0. */
  vxIp?: string;
}

export interface XBaselinePlan {
  kind: XBaselineKind;
  underlay: string;
  nodes: [XNode, XNode];
  podMtu: number;
  /** Every command, in order; each runs in one of the plan's namespaces (`ip -n` or nsenter), never the caller's. */
  commands: string[][];
}

/**
 * The baseline as commands, without running anything: underlay netns with bridge br0, two node netns plugged
 * in by veth (192.168.77.0/24 for xroute, .78 for xvxlan; nodes .100/.101 as the lab), one pod per node joined
 * by a veth the way ptp does it (pod /32, `default via` the gateway that the node owns on its veth end), and
 * ip_forward on in the nodes. xroute: each node routes the peer's pod /24 via the peer's underlay address.
 * xvxlan: a point-to-point kernel VXLAN device per node (VNI 42, UDP 8472, MTU 1450) with a 10.x.255.0/24
 * address, the peer's pod /24 routed via the peer's vx0 address; pod MTU 1450 as Tendril's in tunnel mode.
 */
export function xBaselinePlan(nets: BenchNetns, kind: XBaselineKind): XBaselinePlan {
  const octet = kind === 'xroute' ? 77 : 78;
  const podNet = kind === 'xroute' ? 240 : 241;
  const podMtu = kind === 'xvxlan' ? UNDERLAY_MTU - VXLAN_OVERHEAD : UNDERLAY_MTU;
  const underlay = nets.name(`${kind}-u`);
  const node = (i: 0 | 1): XNode => ({
    ns: nets.name(`${kind}-n${i + 1}`),
    pod: nets.name(`${kind}-p${i + 1}`),
    ip: `192.168.${octet}.${100 + i}`,
    podNet: `10.${podNet}.${i}.0/24`,
    gw: `10.${podNet}.${i}.1`,
    podIp: `10.${podNet}.${i}.3`,
    ...(kind === 'xvxlan' ? { vxIp: `10.${podNet}.255.${i + 1}` } : {}),
  });
  const nodes: [XNode, XNode] = [node(0), node(1)];
  const c: string[][] = [];
  const ip = (ns: string, ...args: string[]) => c.push(['ip', '-n', ns, ...args]);
  ip(underlay, 'link', 'add', 'br0', 'type', 'bridge');
  ip(underlay, 'link', 'set', 'br0', 'up');
  nodes.forEach((n, i) => {
    const port = `u-n${i + 1}`;
    ip(underlay, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.ns);
    ip(underlay, 'link', 'set', port, 'master', 'br0', 'up');
    ip(n.ns, 'addr', 'add', `${n.ip}/24`, 'dev', 'eth0');
    ip(n.ns, 'link', 'set', 'eth0', 'up');
    c.push(inNs(n.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']));
    ip(n.ns, 'link', 'add', 'lxc0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', n.pod);
    ip(n.ns, 'link', 'set', 'lxc0', 'mtu', String(podMtu), 'up');
    ip(n.ns, 'addr', 'add', `${n.gw}/32`, 'dev', 'lxc0');
    ip(n.ns, 'route', 'add', `${n.podIp}/32`, 'dev', 'lxc0', 'scope', 'link');
    ip(n.pod, 'link', 'set', 'eth0', 'mtu', String(podMtu), 'up');
    ip(n.pod, 'addr', 'add', `${n.podIp}/32`, 'dev', 'eth0');
    ip(n.pod, 'route', 'add', `${n.gw}/32`, 'dev', 'eth0', 'scope', 'link');
    ip(n.pod, 'route', 'add', 'default', 'via', n.gw, 'dev', 'eth0');
  });
  nodes.forEach((n, i) => {
    const peer = nodes[1 - i]!;
    if (kind === 'xroute') {
      ip(n.ns, 'route', 'add', peer.podNet, 'via', peer.ip, 'dev', 'eth0');
      return;
    }
    // udpcsum: Tendril's collect-metadata device sends UDP checksums too, so both pay the same per packet.
    ip(n.ns, 'link', 'add', 'vx0', 'type', 'vxlan', 'id', String(VXLAN_VNI), 'dstport', String(VXLAN_PORT), 'local', n.ip, 'remote', peer.ip, 'dev', 'eth0', 'udpcsum');
    ip(n.ns, 'link', 'set', 'vx0', 'mtu', String(podMtu), 'up');
    ip(n.ns, 'addr', 'add', `${n.vxIp!}/24`, 'dev', 'vx0');
    ip(n.ns, 'route', 'add', peer.podNet, 'via', peer.vxIp!, 'dev', 'vx0');
  });
  return { kind, underlay, nodes, podMtu, commands: c };
}

/** Every namespace of a baseline (for the phase's teardown; the run's cleanup finds them by prefix anyway). */
export function xBaselineNetns(plan: XBaselinePlan): string[] {
  return [plan.underlay, ...plan.nodes.flatMap((n) => [n.ns, n.pod])];
}

/** Builds a baseline: its namespaces, then the plan's commands. Pod 1 (node 1) is the client. */
export function setupXBaseline(nets: BenchNetns, kind: XBaselineKind): Pair {
  const plan = xBaselinePlan(nets, kind);
  for (const ns of xBaselineNetns(plan)) nets.add(ns.slice(nets.prefix.length));
  for (const argv of plan.commands) run(argv);
  const [a, b] = plan.nodes;
  const desc =
    kind === 'xroute'
      ? `plain routing, no BPF: pod /32 veths into two node netns on an underlay bridge, each node routes the peer's pod /24 via the peer's underlay IP (pod MTU ${plan.podMtu})`
      : `plain kernel VXLAN, no BPF: the same shape, each node a point-to-point vxlan device (VNI ${VXLAN_VNI}, UDP ${VXLAN_PORT}, udpcsum) and the peer's pod /24 routed via it (pod and vxlan MTU ${plan.podMtu})`;
  return { name: kind, desc, client: a.pod, server: b.pod, serverIp: b.podIp };
}

/** A two-node lab in the given routing mode, pod a on ctr (client) and pod b on w1 (server). */
export async function setupTendrilXnode(lab: string, routing: RoutingMode): Promise<Pair> {
  await labDown(lab);
  await labUp({ name: lab, nodes: 2, routing, store: 'local' });
  const a = await podAdd(lab, 'a', { node: 'ctr', labels: { app: 'bench-a' } });
  const b = await podAdd(lab, 'b', { node: 'w1', labels: { app: 'bench-b' } });
  if (a.node === b.node) throw new BenchError(`Lab "${lab}" put both bench pods on node ${a.node}`);
  const desc =
    routing === 'tunnel'
      ? 'Tendril 2-node lab, tunnel: eBPF encapsulation into the collect-metadata tendril_vxlan (UDP 8472), pod MTU 1450'
      : 'Tendril 2-node lab, native: eBPF bpf_fib_lookup + bpf_redirect_neigh to the peer node, podCIDR routed via nodeIP';
  return { name: routing === 'tunnel' ? 'tendril-tunnel' : 'tendril-native', desc, client: a.netns, server: b.netns, serverIp: b.ip };
}
