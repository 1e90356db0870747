// Same-node pod pairs to measure: a raw veth pair, the reference bridge and ptp plugins, Tendril's lab node (cross-node: xnode.ts).
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { labDown, labUp, podAdd } from '../src/lab/lab.js';
import { netnsPath } from '../src/lab/paths.js';
import type { BenchNetns } from './netns.js';
import { BenchError, inNs, run } from './proc.js';

export const REF_CNI_DIR = '/usr/lib/cni';

export type ScenarioName = 'veth' | 'bridge' | 'ptp' | 'tendril' | 'xroute' | 'xvxlan' | 'tendril-tunnel' | 'tendril-native';

export interface Pair {
  name: ScenarioName;
  desc: string;
  /** Client = "pod 1", server = "pod 2". */
  client: string;
  server: string;
  serverIp: string;
}

/** The physical limit of netns-to-netns here: one veth pair, no node hop, nothing else. */
export function setupVeth(nets: BenchNetns): Pair {
  const a = nets.add('veth-a');
  const b = nets.add('veth-b');
  run(['ip', '-n', a, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', b]);
  run(['ip', '-n', a, 'addr', 'add', '10.210.0.1/24', 'dev', 'eth0']);
  run(['ip', '-n', b, 'addr', 'add', '10.210.0.2/24', 'dev', 'eth0']);
  run(['ip', '-n', a, 'link', 'set', 'eth0', 'up']);
  run(['ip', '-n', b, 'link', 'set', 'eth0', 'up']);
  return { name: 'veth', desc: 'raw veth pair netns<->netns (no node hop)', client: a, server: b, serverIp: '10.210.0.2' };
}

/** Network config of a reference plugin with host-local IPAM keeping its state under `dataDir`. */
export function refPluginConfig(type: 'bridge' | 'ptp', name: string, subnet: string, dataDir: string): string {
  const ipam = { type: 'host-local', ranges: [[{ subnet }]], dataDir };
  const conf =
    type === 'bridge'
      ? { cniVersion: '1.0.0', name, type, bridge: 'tdlbr0', isGateway: true, ipMasq: false, hairpinMode: false, mtu: 1500, ipam }
      : { cniVersion: '1.0.0', name, type, ipMasq: false, mtu: 1500, ipam };
  return JSON.stringify(conf);
}

/**
 * Executes a reference plugin like a runtime, inside `nodeNs`: plugins create the host side in their caller's
 * namespace, so the bridge / host veth ends land in the bench's node namespace and never in the root one.
 */
export function execRefPlugin(nodeNs: string, type: string, command: 'ADD' | 'DEL', containerId: string, podNs: string, config: string): string {
  const env = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_COMMAND: command,
    CNI_CONTAINERID: containerId,
    CNI_NETNS: netnsPath(podNs),
    CNI_IFNAME: 'eth0',
    CNI_PATH: REF_CNI_DIR,
  };
  return run(inNs(nodeNs, [path.join(REF_CNI_DIR, type)]), { env, input: config }).stdout;
}

/** Two pods wired by the reference bridge or ptp plugin (host-local IPAM) on their own node namespace. */
export function setupRefPair(nets: BenchNetns, type: 'bridge' | 'ptp', tmpDir: string): Pair {
  const subnet = type === 'bridge' ? '10.211.0.0/24' : '10.212.0.0/24';
  const dataDir = path.join(tmpDir, `ipam-${type}-pair`);
  fs.mkdirSync(dataDir, { recursive: true });
  const conf = refPluginConfig(type, `tdlb-${type}-pair`, subnet, dataDir);
  const node = nets.add(`${type}-node`);
  const pods = [nets.add(`${type}-p1`), nets.add(`${type}-p2`)];
  const ips = pods.map((p) => {
    const out = execRefPlugin(node, type, 'ADD', randomBytes(16).toString('hex'), p, conf);
    const addr = (JSON.parse(out) as { ips?: Array<{ address: string }> }).ips?.[0]?.address;
    if (!addr) throw new BenchError(`${type} ADD for ${p} returned no IP: ${out}`);
    return addr.split('/')[0]!;
  });
  const desc =
    type === 'bridge' ? 'CNI bridge + host-local (L2 through a Linux bridge in the node netns)' : 'CNI ptp + host-local (routed /32 veths through the node netns stack)';
  return { name: type, desc, client: pods[0]!, server: pods[1]!, serverIp: ips[1]! };
}

/** Tendril: a one-node lab with two pods added through the CNI plugin (the agent's eBPF datapath between them). */
export async function setupTendril(lab: string, attachMode: 'tcx' | 'tc' = 'tcx'): Promise<Pair> {
  await labDown(lab);
  await labUp({ name: lab, nodes: 1, attachMode });
  const a = await podAdd(lab, 'a', { node: 'ctr', labels: { app: 'bench-a' } });
  const b = await podAdd(lab, 'b', { node: 'ctr', labels: { app: 'bench-b' } });
  return { name: 'tendril', desc: 'Tendril lab node: tcx eBPF on the pod veths, same-node redirect into the peer pod', client: a.netns, server: b.netns, serverIp: b.ip };
}
