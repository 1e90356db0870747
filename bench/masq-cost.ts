// Per-packet cost of BPF masquerading, load-independent: host.o's cil_to_netdev and cil_from_netdev timed by
// BPF_PROG_TEST_RUN (the kernel's ns for one run, median of many: time in the program, not the wall clock of a
// loaded machine) on an established flow's packets, this tree's object against a baseline object (e.g. main's build) in
// the same run, the two run by turns, medians. Root; nothing is attached, the maps are pinned under the run's own
// bpffs directory and removed afterwards.
// lxc.o's cil_from_container is taken from the directory of each host.o.
//   node dist/bench/masq-cost.js [--base /work/main/build/bpf/host.o] [--obj build/bpf/host.o] [--rounds 7] [--repeat 5000] [--no-events]
import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { Collection, skbCtx, u32, type BpfProgram } from '../src/kernel/bpf/index.js';
import { EGRESS_STATE_EMPTY, EGRESS_STATE_MAP } from '../src/egress/index.js';
import { IPCACHE_MAP, LXC_IF_MAP, LXC_MAP, ifindexKeyCodec, ROUTING_MODE_NATIVE, endpointInfoCodec, endpointKeyCodec, ipcacheKeyCodec, ipcacheValueCodec, type EndpointInfo } from '../src/datapath/maps.js';
import { natConstants } from '../src/datapath/nat.js';
import { parseIPv4 } from '../src/util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP, ethernet, ipv4, l4 } from '../src/lab/packets.js';
import { median } from './stats.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NODE_IP = '192.168.78.10';
const EXT = '203.0.113.10';
const REMOTE_POD = '10.202.0.20';
const pod: EndpointInfo = { ifindex: 4243, lxcId: 102, flags: 0, mac: '02:00:0a:c9:00:0a', nodeMac: '02:00:0a:c9:01:0a', secId: 1002, ip4: '10.201.0.10' };
const MARK_TRACED_NET = 0x0700;

function be32(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}

export interface CostCase {
  name: string;
  prog: 'cil_to_netdev' | 'cil_from_netdev' | 'cil_from_container';
  frame: Buffer;
  mark?: number;
  /** A frame per run (a new flow each: a TCP SYN from a port not used before), instead of `frame`. */
  each?: (round: number, i: number) => Buffer;
}

function cases(): CostCase[] {
  const out = (p: Buffer): Buffer => ethernet('02:00:00:00:78:01', '02:00:00:00:78:0a', p);
  const inn = (p: Buffer): Buffer => ethernet('02:00:00:00:78:0a', '02:00:00:00:78:01', p);
  const tcp = out(ipv4(pod.ip4, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, EXT, 40001, 80, Buffer.alloc(64), 0x10)));
  const udp = out(ipv4(pod.ip4, EXT, IPPROTO_UDP, l4(IPPROTO_UDP, pod.ip4, EXT, 40002, 53, Buffer.alloc(64))));
  const tcpBack = inn(ipv4(EXT, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, NODE_IP, 80, 40001, Buffer.alloc(64), 0x10)));
  // Native routing: another node's pod to a pod here (no NAT, no service): what the reply path's guards cost it.
  const routed = inn(ipv4(REMOTE_POD, pod.ip4, IPPROTO_TCP, l4(IPPROTO_TCP, REMOTE_POD, pod.ip4, 80, 40003, Buffer.alloc(64), 0x10)));
  // The pod's own packet as its veth hands it to cil_from_container (lxc.o beside host.o): to the world, established.
  const fromPod = ethernet(pod.nodeMac, pod.mac, ipv4(pod.ip4, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, EXT, 40001, 80, Buffer.alloc(64), 0x10)));
  return [
    { name: 'from-container TCP established to the world (lxc.o)', prog: 'cil_from_container', frame: fromPod },
    { name: 'to-netdev TCP established', prog: 'cil_to_netdev', frame: tcp },
    { name: 'to-netdev TCP established, traced by from-container (native)', prog: 'cil_to_netdev', frame: tcp, mark: MARK_TRACED_NET },
    { name: 'to-netdev UDP established', prog: 'cil_to_netdev', frame: udp },
    { name: 'from-netdev TCP reply', prog: 'cil_from_netdev', frame: tcpBack },
    { name: 'from-netdev routed TCP to a local pod (native, no NAT)', prog: 'cil_from_netdev', frame: routed },
    // The floor: the node's own packet, which leaves at once (what a run costs around the program's own work).
    { name: 'to-netdev the node\'s own TCP packet (floor: no NAT work)', prog: 'cil_to_netdev', frame: out(ipv4(NODE_IP, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, NODE_IP, EXT, 22, 40000, Buffer.alloc(64), 0x10))) },
    {
      name: 'to-netdev TCP SYN of a new flow, traced by from-container (native)',
      prog: 'cil_to_netdev',
      frame: tcp,
      mark: MARK_TRACED_NET,
      // Source ports above the untraced SYN case's (each run a tuple of its own).
      each: (r, i) => out(ipv4(pod.ip4, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, EXT, 32768 + i, 2000 + r, Buffer.alloc(0), 0x02))),
    },
    {
      // The first reply of each flow the case above opened (its IN entry made there, in the same round).
      name: 'from-netdev TCP SYN-ACK, the first reply of a new flow',
      prog: 'cil_from_netdev',
      frame: tcpBack,
      each: (r, i) => inn(ipv4(EXT, NODE_IP, IPPROTO_TCP, l4(IPPROTO_TCP, EXT, NODE_IP, 2000 + r, 32768 + i, Buffer.alloc(0), 0x12))),
    },
    {
      name: 'to-netdev TCP SYN of a new flow (a new mapping)',
      prog: 'cil_to_netdev',
      frame: tcp,
      // Unique tuple per run: the destination port by round, the source port by run (both mappings made new).
      each: (r, i) => out(ipv4(pod.ip4, EXT, IPPROTO_TCP, l4(IPPROTO_TCP, pod.ip4, EXT, 32768 + i, 1000 + r, Buffer.alloc(0), 0x02))),
    },
  ];
}

export async function main(): Promise<void> {
  const { values } = parseArgs({ options: { base: { type: 'string' }, obj: { type: 'string' }, rounds: { type: 'string' }, repeat: { type: 'string' }, 'no-events': { type: 'boolean' } } });
  const base = values.base ?? '/work/main/build/bpf/host.o';
  const rounds = Number(values.rounds ?? 7);
  const repeat = Number(values.repeat ?? 5000);
  // The new-flow case's source ports: one per run, inside the NAT range (kept as the pod's own).
  if (repeat > 28000) throw new Error('bench/masq-cost: --repeat at most 28000');
  if (process.getuid?.() !== 0) throw new Error('bench/masq-cost needs root (BPF_PROG_LOAD, bpffs)');
  const objs: Array<[string, string]> = [['base', base], ['this tree', values.obj ?? root + 'build/bpf/host.o']];
  const pinRoots: string[] = [];
  const progs = new Map<string, Map<string, BpfProgram>>();
  const loaded: Collection[] = [];
  try {
    for (const [label, file] of objs) {
      // Each object its own maps (their layouts may differ between trees).
      const pinRoot = `/sys/fs/bpf/tendril-bench-${process.pid}-masqcost-${pinRoots.length}`;
      mkdirSync(pinRoot, { recursive: true });
      pinRoots.push(pinRoot);
      const c = Collection.load(file, {
        constants: { ...(values['no-events'] ? { CONFIG_EVENTS: 0 } : {}), CONFIG_NODE_IP4: be32(NODE_IP), CONFIG_ROUTING_MODE: ROUTING_MODE_NATIVE, ...natConstants({ enabled: true, portMin: 32768, portMax: 60999, ipMasqAgent: false }) },
        pinRoot,
      });
      loaded.push(c);
      c.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec).put({ ip4: pod.ip4 }, pod);
      c.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec).put({ prefix: pod.ip4 }, { identity: pod.secId, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 });
      // No egress gateway policy: the agent marks the policy map empty (a tree before that mark has no such map).
      let state: ReturnType<Collection['map']> | undefined;
      try {
        state = c.map(EGRESS_STATE_MAP);
      } catch {
        state = undefined;
      }
      state?.typed(u32, u32).update(0, EGRESS_STATE_EMPTY);
      // lxc.o of the same tree (its directory), sharing the pinned maps; the pod's veth is lo (the test run's ifindex).
      const lxc = Collection.load(path.join(path.dirname(file), 'lxc.o'), {
        constants: { ...(values['no-events'] ? { CONFIG_EVENTS: 0 } : {}), CONFIG_NODE_IP4: be32(NODE_IP), CONFIG_ROUTING_MODE: ROUTING_MODE_NATIVE, ...natConstants({ enabled: true, portMin: 32768, portMax: 60999, ipMasqAgent: false }) },
        pinRoot,
      });
      loaded.push(lxc);
      lxc.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(1, { ...pod, ifindex: 1 });
      progs.set(label, new Map([['cil_to_netdev', c.program('cil_to_netdev')], ['cil_from_netdev', c.program('cil_from_netdev')], ['cil_from_container', lxc.program('cil_from_container')]]));
    }
    const ns = new Map<string, number[]>();
    for (const [label] of objs) {
      // The flows' mappings first (a SYN-less first packet of each, then the reply direction has its entry).
      for (const k of cases()) if (k.prog !== 'cil_from_netdev' && !k.each) progs.get(label)!.get(k.prog)!.run({ data: k.frame, ctx: skbCtx({ ifindex: 1 }) });
    }
    for (let r = 0; r < rounds; r++) {
      for (const k of cases()) {
        // One run per call: repeated runs inside the kernel reuse the packet the first one rewrote (an already
        // translated packet takes the early way out), so each call starts from the original frame. The two objects
        // take turns run by run (the first of each pair alternating), so that load changing over a round weighs
        // on both alike.
        const one = new Map<string, number[]>(objs.map(([label]) => [label, []]));
        for (let i = 0; i < repeat; i++) {
          for (const [label] of (i + r) % 2 ? [...objs].reverse() : objs) {
            const prog = progs.get(label)!.get(k.prog)!;
            one.get(label)!.push(prog.run({ data: k.each ? k.each(r, i) : k.frame, ctx: skbCtx({ ifindex: 1, mark: k.mark ?? 0 }) }).durationNs);
          }
        }
        for (const [label] of objs) {
          const key = `${label}|${k.name}`;
          ns.set(key, [...(ns.get(key) ?? []), median(one.get(label)!)]);
        }
      }
    }
    const lines = [
      `## Masquerade per-packet cost (BPF_PROG_TEST_RUN, median ns of ${repeat} single runs, medians of ${rounds} rounds, the two objects run by turns; base ${base})`,
      '',
      '| packet | base ns | this tree ns | this / base |',
      '|---|---:|---:|---:|',
      ...cases().map((k) => {
        const b = median(ns.get(`base|${k.name}`)!);
        const t = median(ns.get(`this tree|${k.name}`)!);
        return `| ${k.name} | ${b.toFixed(0)} | ${t.toFixed(0)} | ${(t / b).toFixed(3)} |`;
      }),
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const c of loaded) c.close();
    for (const p of pinRoots) rmSync(p, { recursive: true, force: true });
  }
}

await main();
