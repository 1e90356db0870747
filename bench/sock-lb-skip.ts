// What socket LB saves per packet: lxc.o's cil_from_container timed by BPF_PROG_TEST_RUN (the kernel's ns for one
// run, median of many: time in the program, not the wall clock of a loaded machine) without socket LB (the
// per-packet service lookup runs and misses) and with the socket-LB cgroup set (CONFIG_SOCK_LB_CGROUP_ID/_LEVEL: the
// packet's socket is in it, the lookup is skipped), on the packets a pod sends once its socket was translated (to a
// backend pod here, to a pod on another node), with services in the maps. A test run's packet carries a socket of
// the calling process, so the bench's own cgroup stands for the socket-LB one. Same object, interleaved rounds, medians. Root; nothing is attached, the maps are pinned
// under the run's own bpffs directory and removed afterwards.
// --variant OBJ: a third column, another lxc.o (e.g. this tree's with lb4_from_lxc() returning at once for a socket
// of the cgroup, which drops the two service-map lookups such packets pay), loaded with the socket-LB cgroup too.
//   node dist/bench/sock-lb-skip.js [--rounds 7] [--repeat 5000] [--variant OBJ]
import { mkdirSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Collection, cgroupIdLevel, skbCtx, type BpfProgram } from '../src/kernel/bpf/index.js';
import { cgroup2Root } from '../src/lab/cgroups.js';
import { IPCACHE_MAP, LXC_IF_MAP, LXC_MAP, endpointInfoCodec, endpointKeyCodec, ifindexKeyCodec, ipcacheKeyCodec, ipcacheValueCodec, type EndpointInfo } from '../src/datapath/maps.js';
import { LbDatapath, type Frontend } from '../src/lb/index.js';
import { parseIPv4 } from '../src/util/ip.js';
import { IPPROTO_TCP, IPPROTO_UDP, ethernet, ipv4, l4 } from '../src/lab/packets.js';
import { median } from './stats.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const LO = 1;
const client: EndpointInfo = { ifindex: LO, lxcId: 11, flags: 0, mac: '02:00:0a:c9:00:0b', nodeMac: '02:00:0a:c9:01:0b', secId: 2001, ip4: '10.201.0.11' };
const backend: EndpointInfo = { ifindex: 5021, lxcId: 21, flags: 0, mac: '02:00:0a:c9:00:15', nodeMac: '02:00:0a:c9:01:15', secId: 2021, ip4: '10.201.0.21' };
const REMOTE_POD = '10.202.0.20';

function be32(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}

function cases(): Array<{ name: string; frame: Buffer }> {
  const f = (dst: string, proto: 6 | 17, sport: number, dport: number, flags?: number): Buffer =>
    ethernet(client.nodeMac, client.mac, ipv4(client.ip4, dst, proto, l4(proto, client.ip4, dst, sport, dport, Buffer.alloc(64), flags)));
  return [
    { name: 'TCP to a backend pod on this node (ACK)', frame: f(backend.ip4, IPPROTO_TCP, 40001, 8080, 0x10) },
    { name: 'UDP to a backend pod on this node', frame: f(backend.ip4, IPPROTO_UDP, 40002, 5353) },
    { name: 'TCP to a pod on another node (ACK)', frame: f(REMOTE_POD, IPPROTO_TCP, 40003, 8080, 0x10) },
  ];
}

export async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string' }, repeat: { type: 'string' }, variant: { type: 'string' } } });
  const rounds = Number(values.rounds ?? 7);
  const repeat = Number(values.repeat ?? 5000);
  if (process.getuid?.() !== 0) throw new Error('bench/sock-lb-skip needs root (BPF_PROG_LOAD, bpffs)');
  const pinRoot = `/sys/fs/bpf/tendril-bench-${process.pid}-sockskip`;
  mkdirSync(pinRoot, { recursive: true });
  const loaded: Collection[] = [];
  try {
    const variants: Array<[string, BpfProgram]> = [];
    const own = /^0::(.*)$/m.exec(readFileSync('/proc/self/cgroup', 'utf8'))?.[1];
    if (own === undefined) throw new Error('bench/sock-lb-skip: this process has no cgroup v2 path');
    const cg = cgroupIdLevel(path.join(cgroup2Root(), own));
    for (const [label, id] of [['per-packet lookup', 0n], ['socket in the socket-LB cgroup', cg.id]] as const) {
      // One set of maps for both (pinned by name): the same endpoints, ipcache and services.
      const c = Collection.load(root + 'build/bpf/lxc.o', { constants: { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32('192.0.2.9'), CONFIG_SOCK_LB_CGROUP_ID: id, CONFIG_SOCK_LB_CGROUP_LEVEL: cg.level }, pinRoot });
      loaded.push(c);
      variants.push([label, c.program('cil_from_container')]);
    }
    if (values.variant) {
      const c = Collection.load(values.variant, { constants: { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32('192.0.2.9'), CONFIG_SOCK_LB_CGROUP_ID: cg.id, CONFIG_SOCK_LB_CGROUP_LEVEL: cg.level }, pinRoot });
      loaded.push(c);
      variants.push([`variant ${path.basename(values.variant)}, socket in the cgroup`, c.program('cil_from_container')]);
    }
    const c = loaded[0]!;
    const lxc = c.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
    for (const ep of [client, backend]) lxc.put({ ip4: ep.ip4 }, ep);
    c.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(LO, client);
    const ipc = c.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
    ipc.put({ prefix: REMOTE_POD }, { identity: 3001, tunnelEndpoint: '192.0.2.10', nodeId: 0, flags: 0, key: 0 });
    const frontends: Frontend[] = [];
    for (let i = 0; i < 100; i++) frontends.push({ address: `10.96.${i >> 8}.${i & 255}`, port: 80, protocol: 'TCP', service: `default/s${i}`, type: 'ClusterIP', backends: [{ ip: backend.ip4, port: 8080 }] });
    new LbDatapath((n) => c.map(n), { algorithm: 'random', maglevTableSize: 251 }).sync(frontends);
    const ns = new Map<string, number[]>();
    for (let r = 0; r < rounds; r++) {
      const order = r % 2 ? [...variants].reverse() : variants;
      for (const [label, prog] of order) {
        for (const k of cases()) {
          const one: number[] = [];
          for (let i = 0; i < repeat; i++) one.push(prog.run({ data: k.frame, ctx: skbCtx({ ifindex: LO }) }).durationNs);
          const key = `${label}|${k.name}`;
          ns.set(key, [...(ns.get(key) ?? []), median(one)]);
        }
      }
    }
    const [a, b, v] = variants.map(([l]) => l) as [string, string, string | undefined];
    const lines = [
      `## Endpoint program per-packet cost with socket LB (BPF_PROG_TEST_RUN of cil_from_container, median ns of ${repeat} single runs, medians of ${rounds} interleaved rounds; 100 services in the maps)`,
      '',
      `| packet (its socket already translated) | ${a} ns | ${b} ns | ${b} / ${a} |${v ? ` ${v} ns | ${v} / ${b} |` : ''}`,
      `|---|---:|---:|---:|${v ? '---:|---:|' : ''}`,
      ...cases().map((k) => {
        const x = median(ns.get(`${a}|${k.name}`)!);
        const y = median(ns.get(`${b}|${k.name}`)!);
        const z = v ? median(ns.get(`${v}|${k.name}`)!) : 0;
        return `| ${k.name} | ${x.toFixed(0)} | ${y.toFixed(0)} | ${(y / x).toFixed(3)} |${v ? ` ${z.toFixed(0)} | ${(z / y).toFixed(3)} |` : ''}`;
      }),
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const c of loaded) c.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

await main();
