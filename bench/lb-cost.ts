// Per-packet cost of the service lookup with 1 vs N services (default 10,000, 4 backends each), load-independent:
// lxc.o's cil_from_container timed by BPF_PROG_TEST_RUN (the kernel's ns for one run, median of many: time in the
// program, not the wall clock of a loaded machine) on a pod's packets to a ClusterIP (a new connection's SYN, each run
// a tuple of its own: lookup, backend selection, LB conntrack entry; and an established connection's ACK) and, for
// reference, to the backend's IP (no translation). Two sets of maps, one holding the bench service alone, one holding
// it among N-1 filler services; the same object, rounds interleaved between them, medians. Root; nothing is attached,
// the maps are pinned under the run's own bpffs directories and removed afterwards.
//   node dist/bench/lb-cost.js [--services 10000] [--rounds 7] [--repeat 4000]
import { mkdirSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { Collection, skbCtx, type BpfProgram } from '../src/kernel/bpf/index.js';
import { IPCACHE_MAP, LXC_IF_MAP, LXC_MAP, endpointInfoCodec, endpointKeyCodec, ifindexKeyCodec, ipcacheKeyCodec, ipcacheValueCodec, type EndpointInfo } from '../src/datapath/maps.js';
import { LbDatapath, type Frontend } from '../src/lb/index.js';
import { formatIPv4, parseIPv4 } from '../src/util/ip.js';
import { IPPROTO_TCP, ethernet, ipv4, l4 } from '../src/lab/packets.js';
import { median } from './stats.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const LO = 1;
const client: EndpointInfo = { ifindex: LO, lxcId: 11, flags: 0, mac: '02:00:0a:c9:00:0b', nodeMac: '02:00:0a:c9:01:0b', secId: 2001, ip4: '10.201.0.11' };
const backends = [21, 22, 23, 24].map((n): EndpointInfo => ({ ifindex: 5000 + n, lxcId: n, flags: 0, mac: `02:00:0a:c9:00:${n.toString(16)}`, nodeMac: `02:00:0a:c9:01:${n.toString(16)}`, secId: 2021, ip4: `10.201.0.${n}` }));
const VIP = '10.96.0.10';
const FILLER_BACKENDS = 64;

function be32(ip: string): number {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(parseIPv4(ip));
  return b.readUInt32LE();
}

interface Case {
  name: string;
  frame: (round: number, i: number) => Buffer;
}

const frame = (dst: string, sport: number, dport: number, flags: number): Buffer =>
  ethernet(client.nodeMac, client.mac, ipv4(client.ip4, dst, IPPROTO_TCP, l4(IPPROTO_TCP, client.ip4, dst, sport, dport, Buffer.alloc(flags === 0x02 ? 0 : 64), flags)));

function cases(repeat: number): Case[] {
  const ack = frame(VIP, 40001, 80, 0x10);
  const direct = frame(backends[0]!.ip4, 40002, 8080, 0x10);
  return [
    // A tuple per run (source port by round and run): every SYN a new connection.
    { name: 'ClusterIP, SYN of a new connection', frame: (r, i) => frame(VIP, 1024 + r * repeat + i, 80, 0x02) },
    { name: 'ClusterIP, established (ACK)', frame: () => ack },
    { name: 'backend IP, no translation (ACK)', frame: () => direct },
  ];
}

/** The bench service (4 backends) and `n - 1` fillers (4 of FILLER_BACKENDS backends each), as the agent writes them. */
function frontends(n: number): Frontend[] {
  const out: Frontend[] = [{ address: VIP, port: 80, protocol: 'TCP', service: 'bench/web', type: 'ClusterIP', backends: backends.map((b) => ({ ip: b.ip4, port: 8080 })) }];
  for (let i = 1; i < n; i++) {
    const addr = formatIPv4(((10 << 24) | (97 << 16) | i) >>> 0);
    const be = [0, 1, 2, 3].map((k) => ({ ip: formatIPv4(((10 << 24) | (210 << 16) | ((i + k) % FILLER_BACKENDS)) >>> 0), port: 8080 }));
    out.push({ address: addr, port: 80, protocol: 'TCP', service: `fill/s${i}`, type: 'ClusterIP', backends: be });
  }
  return out;
}

export async function main(): Promise<void> {
  const { values } = parseArgs({ options: { services: { type: 'string' }, rounds: { type: 'string' }, repeat: { type: 'string' } } });
  const services = Number(values.services ?? 10_000);
  const rounds = Number(values.rounds ?? 7);
  const repeat = Number(values.repeat ?? 4000);
  if (process.getuid?.() !== 0) throw new Error('bench/lb-cost needs root (BPF_PROG_LOAD, bpffs)');
  if (!(Number.isInteger(services) && services >= 2 && services <= 12_000)) throw new Error('bench/lb-cost: --services 2..12000 (5 service map entries each, 65,536 in all)');
  if (!(rounds > 0 && repeat > 0 && rounds * repeat <= 60_000)) throw new Error('bench/lb-cost: --rounds × --repeat at most 60000 (a source port per new connection)');
  const pinRoots: string[] = [];
  const loaded: Collection[] = [];
  try {
    const variants: Array<[string, BpfProgram]> = [];
    for (const [label, n] of [['1 service', 1], [`${services} services`, services]] as const) {
      const pinRoot = `/sys/fs/bpf/tendril-bench-${process.pid}-lbcost-${pinRoots.length}`;
      mkdirSync(pinRoot, { recursive: true });
      pinRoots.push(pinRoot);
      const c = Collection.load(root + 'build/bpf/lxc.o', { constants: { CONFIG_ROUTER_IP4: be32('10.201.0.1'), CONFIG_NODE_IP4: be32('192.0.2.9') }, pinRoot });
      loaded.push(c);
      const lxc = c.map(LXC_MAP).typed(endpointKeyCodec, endpointInfoCodec);
      for (const ep of [client, ...backends]) lxc.put({ ip4: ep.ip4 }, ep);
      c.map(LXC_IF_MAP).typed(ifindexKeyCodec, endpointInfoCodec).put(LO, client);
      const ipc = c.map(IPCACHE_MAP).typed(ipcacheKeyCodec, ipcacheValueCodec);
      for (const ep of [client, ...backends]) ipc.put({ prefix: ep.ip4 }, { identity: ep.secId, tunnelEndpoint: '0.0.0.0', nodeId: 0, flags: 0, key: 0 });
      const t0 = performance.now();
      new LbDatapath((m) => c.map(m), { algorithm: 'random', maglevTableSize: 251 }).sync(frontends(n));
      console.error(`lb-cost: ${label} written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
      // The check that the bench measures a translation: the SYN to the ClusterIP leaves with a backend's address.
      const prog = c.program('cil_from_container');
      const probe = prog.run({ data: frame(VIP, 65000, 80, 0x02), ctx: skbCtx({ ifindex: LO }) }).data;
      const dst = formatIPv4(probe.readUInt32BE(14 + 16));
      if (!backends.some((x) => x.ip4 === dst)) throw new Error(`bench/lb-cost: ${label}: the SYN to ${VIP} left for ${dst}, not a backend`);
      variants.push([label, prog]);
    }
    const ns = new Map<string, number[]>();
    const ks = cases(repeat);
    for (let r = 0; r < rounds; r++) {
      for (const [label, prog] of r % 2 ? [...variants].reverse() : variants) {
        for (const k of ks) {
          const one: number[] = [];
          for (let i = 0; i < repeat; i++) {
            const out = prog.run({ data: k.frame(r, i), ctx: skbCtx({ ifindex: LO }) });
            one.push(out.durationNs);
          }
          const key = `${label}|${k.name}`;
          ns.set(key, [...(ns.get(key) ?? []), median(one)]);
        }
      }
    }
    const [a, b] = variants.map(([l]) => l) as [string, string];
    const lines = [
      `## Service lookup per packet, 1 vs ${services} services (BPF_PROG_TEST_RUN of cil_from_container, median ns of ${repeat} single runs, medians of ${rounds} interleaved rounds)`,
      '',
      `| pod's packet | ${a} ns | ${b} ns | ${b} / ${a} |`,
      '|---|---:|---:|---:|',
      ...ks.map((k) => {
        const x = median(ns.get(`${a}|${k.name}`)!);
        const y = median(ns.get(`${b}|${k.name}`)!);
        return `| ${k.name} | ${x.toFixed(0)} | ${y.toFixed(0)} | ${(y / x).toFixed(3)} |`;
      }),
      '',
    ];
    process.stdout.write(lines.join('\n') + '\n');
  } finally {
    for (const c of loaded) c.close();
    for (const p of pinRoots) rmSync(p, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(() => process.exit(0), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
