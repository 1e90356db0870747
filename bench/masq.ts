// Pod -> external host (seed "Cilium Networking" §2.1): through Tendril's BPF masquerade on a lab node, through the
// reference ptp plugin with ipMasq (iptables MASQUERADE in the node) and through the same node routed without NAT.
// Every end is one of the run's namespaces (or the run's own lab); nothing is sent outside them.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { labDown, labUp, podAdd } from '../src/lab/lab.js';
import { externalAdd } from '../src/lab/outside.js';
import { crr, iperf, rr, rrSummary } from './load.js';
import { measure, type NoisePolicy } from './measure.js';
import { MASQ_ORDER, MASQ_PTP, MASQ_ROUTED, MASQ_TENDRIL, type MasqSample } from './masq-report.js';
import type { BenchNetns } from './netns.js';
import { BenchError, inNs, kill, run, sleep, start } from './proc.js';
import { execRefPlugin, refPluginConfig } from './scenarios.js';

export interface MasqPair {
  name: string;
  desc: string;
  client: string;
  server: string;
  serverIp: string;
  /** The source address the external host must see (the node's for NAT, the pod's when routed). */
  seenAs: string;
  /** The node's namespace and its device towards the external host (checkSameShape()). */
  node: { ns: string; dev: string };
}

const CRR_PORT = 5556;
const EXT_IP = '192.168.79.200';

/** Reference shape: underlay bridge, two node netns (.100 NAT by ptp ipMasq, .101 routed), one external host .200. */
export function refMasqPlan(nets: BenchNetns): { underlay: string; ext: string; nodes: Array<{ ns: string; ip: string; subnet: string; masq: boolean }>; commands: string[][] } {
  const underlay = nets.name('masq-u');
  const ext = nets.name('masq-ext');
  const nodes = [
    { ns: nets.name('masq-n1'), ip: '192.168.79.100', subnet: '10.213.0.0/24', masq: true },
    { ns: nets.name('masq-n2'), ip: '192.168.79.101', subnet: '10.214.0.0/24', masq: false },
  ];
  const c: string[][] = [];
  const ip = (ns: string, ...args: string[]) => c.push(['ip', '-n', ns, ...args]);
  ip(underlay, 'link', 'add', 'br0', 'type', 'bridge');
  ip(underlay, 'link', 'set', 'br0', 'up');
  const plug = (ns: string, port: string, addr: string) => {
    ip(underlay, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip(underlay, 'link', 'set', port, 'master', 'br0', 'up');
    ip(ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    ip(ns, 'link', 'set', 'eth0', 'up');
  };
  plug(ext, 'u-ext', EXT_IP);
  nodes.forEach((n, i) => {
    plug(n.ns, `u-n${i + 1}`, n.ip);
    c.push(inNs(n.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']));
  });
  // Routed: the external host knows the way back to the pods (seed §2.3 without NAT).
  ip(ext, 'route', 'add', nodes[1]!.subnet, 'via', nodes[1]!.ip, 'dev', 'eth0');
  return { underlay, ext, nodes, commands: c };
}

/** The two reference pairs: ptp + ipMasq (iptables MASQUERADE) and ptp routed, both to the external host. */
export function setupRefMasq(nets: BenchNetns, tmpDir: string): MasqPair[] {
  const plan = refMasqPlan(nets);
  for (const ns of [plan.underlay, plan.ext, ...plan.nodes.map((n) => n.ns)]) nets.add(ns.slice(nets.prefix.length));
  for (const argv of plan.commands) run(argv);
  return plan.nodes.map((n, i) => {
    const dataDir = path.join(tmpDir, `ipam-masq-${i}`);
    fs.mkdirSync(dataDir, { recursive: true });
    const conf = JSON.parse(refPluginConfig('ptp', `tdlb-masq-${i}`, n.subnet, dataDir)) as Record<string, unknown>;
    conf['ipMasq'] = n.masq;
    // The external host is off the pod's subnet: the pod needs a default route via its ptp gateway.
    (conf['ipam'] as Record<string, unknown>)['routes'] = [{ dst: '0.0.0.0/0' }];
    const pod = nets.add(`masq-p${i + 1}`);
    const out = execRefPlugin(n.ns, 'ptp', 'ADD', randomBytes(16).toString('hex'), pod, JSON.stringify(conf));
    const podIp = (JSON.parse(out) as { ips?: Array<{ address: string }> }).ips?.[0]?.address?.split('/')[0];
    if (!podIp) throw new BenchError(`ptp ADD for ${pod} returned no IP: ${out}`);
    const node = { ns: n.ns, dev: 'eth0' };
    return n.masq
      ? { name: MASQ_PTP, desc: 'CNI ptp + host-local with ipMasq: true (iptables MASQUERADE in the node netns), node -> underlay bridge -> external host', client: pod, server: plan.ext, serverIp: EXT_IP, seenAs: n.ip, node }
      : { name: MASQ_ROUTED, desc: 'the same ptp node without NAT: the external host routes the pod /24 back via the node (the limit)', client: pod, server: plan.ext, serverIp: EXT_IP, seenAs: podIp, node };
  });
}

/** Tendril: a one-node lab, its pod and an external host on the lab's underlay; the agent masquerades in BPF. */
export async function setupTendrilMasq(lab: string): Promise<MasqPair> {
  await labDown(lab);
  const st = await labUp({ name: lab, nodes: 1, routing: 'native' });
  const x = await externalAdd(lab, 'ext', { ip: '192.168.10.200' });
  const a = await podAdd(lab, 'a', { node: 'ctr', labels: { app: 'bench-a' } });
  return {
    name: MASQ_TENDRIL,
    desc: 'Tendril lab node (native routing): the pod\'s traffic source-NATed to the node IP in cil_to_netdev, replies reverse-translated in cil_from_netdev',
    client: a.netns,
    server: x.netns,
    serverIp: x.ip,
    seenAs: st.nodes[0]!.ip,
    node: { ns: st.nodes[0]!.netns, dev: 'eth0' },
  };
}

/** The offloads a TCP stream through veths depends on (ethtool -k names) and how the report shows them. */
const SHAPE_OFFLOADS: ReadonlyArray<[string, string]> = [
  ['tcp-segmentation-offload', 'tso'],
  ['generic-segmentation-offload', 'gso'],
  ['generic-receive-offload', 'gro'],
  ['tx-checksumming', 'tx-csum'],
  ['rx-checksumming', 'rx-csum'],
];

/** MTU, GSO size limit and offloads of `dev` in `ns`, as one comparable line. */
export function linkShape(ns: string, dev: string): string {
  const link = (JSON.parse(run(['ip', '-n', ns, '-j', '-d', 'link', 'show', 'dev', dev]).stdout) as Array<{ mtu?: number; gso_max_size?: number }>)[0];
  if (!link?.mtu) throw new BenchError(`No link ${dev} in ${ns}`);
  const k = run(inNs(ns, ['ethtool', '-k', dev])).stdout;
  const flags = SHAPE_OFFLOADS.map(([name, short]) => `${short} ${new RegExp(`^${name}: (on|off)`, 'm').exec(k)?.[1] ?? '?'}`);
  return [`mtu ${link.mtu}`, `gso_max_size ${link.gso_max_size ?? '?'}`, ...flags].join(', ');
}

/**
 * A fair comparison: every pair's pod eth0, node uplink and external host eth0 have the same MTU and
 * offloads (a difference would be measured as the datapath's). Throws when they differ; returns the report line.
 */
export function checkSameShape(pairs: readonly MasqPair[]): string {
  const ends = (p: MasqPair): Array<[string, string]> => [
    ['pod eth0', linkShape(p.client, 'eth0')],
    [`node ${p.node.dev}`, linkShape(p.node.ns, p.node.dev)],
    ['external eth0', linkShape(p.server, 'eth0')],
  ];
  const all = pairs.map((p) => [p.name, ends(p)] as const);
  const [first, ...rest] = all;
  if (!first) return '';
  for (const [name, shape] of rest) {
    shape.forEach(([where, line], i) => {
      if (line !== first[1][i]![1]) throw new BenchError(`Scenario ${name}: ${where} is "${line}", ${first[0]}'s "${first[1][i]![1]}": the comparison would not be fair`);
    });
  }
  return `link shapes equal in every scenario: ${first[1].map(([where, line]) => `${where} (${line})`).join('; ')}`;
}

/** Fails unless the external host sees the pair's traffic from the expected source (NAT really on, or really off). */
export async function checkSeenAs(p: MasqPair): Promise<void> {
  const js = "const s = require('net').createServer((c) => { c.end(c.remoteAddress + '\\n'); s.close(); }); s.listen(5557, () => console.log('ready'));";
  let ready = false;
  const server = start(inNs(p.server, [process.execPath, '-e', js]), { onStdout: () => (ready = true) });
  try {
    for (let i = 0; i < 200 && !ready; i++) await sleep(50);
    const r = run(inNs(p.client, ['curl', '-s', '--max-time', '5', `telnet://${p.serverIp}:5557`]), { allowFail: true, timeoutMs: 15_000 });
    const seen = /(\d+\.\d+\.\d+\.\d+)/.exec(r.stdout)?.[1];
    if (seen !== p.seenAs) throw new BenchError(`Scenario ${p.name}: the external host saw ${seen ?? 'nothing'} as the source, expected ${p.seenAs}`);
  } finally {
    kill(server.pid);
    await server.exited;
  }
}

/** Every pair in interleaved rounds: stream, TCP_RR, TCP_CRR (one client, as fast as it can). */
export async function masqRounds(pairs: readonly MasqPair[], o: { rrBin: string; secs: number; rounds: number; noise: NoisePolicy; say: (l: string) => void }): Promise<MasqSample[]> {
  const samples: MasqSample[] = [];
  const ordered = MASQ_ORDER.map((n) => pairs.find((p) => p.name === n)).filter((p): p is MasqPair => p !== undefined);
  for (let round = 1; round <= o.rounds; round++) {
    for (const p of round % 2 ? ordered : [...ordered].reverse()) {
      const m = <T>(fn: () => Promise<T>) => measure(o.noise, fn);
      const gbps = await m(() => iperf(p.server, p.client, p.serverIp, o.secs));
      const rrX = await m(async () => rrSummary(await rr(o.rrBin, p.server, p.client, p.serverIp, o.secs)));
      const c = await m(async () => (await crr(o.rrBin, p.server, p.client, p.serverIp, CRR_PORT, o.secs, 0, 1)).tps);
      samples.push({ round, scenario: p.name, gbps, rr: rrX, crr: c });
      o.say(`masq round ${round} ${p.name.padEnd(18)} ${gbps.value.toFixed(2)} Gbit/s  rr ${rrX.value.tps.toFixed(0)}/s  crr ${c.value.toFixed(0)} conn/s`);
    }
  }
  return samples;
}
