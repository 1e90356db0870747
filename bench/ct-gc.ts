// Time of one conntrack GC round's walks with N conntrack entries (default 100,000 in the TCP table) and their
// masquerade mappings (an OUT and an IN entry per flow): the CT GC walks the tables, then the NAT GC needs the live
// flows. "two walks": natGc() walks the conntrack tables again itself (before); "one walk": the CT GC's walk hands
// them over (NatLiveFlows, what NodeDatapath.ctGc() does now). Every entry is live, so neither deletes and each round
// sees the same maps; the two are run by turns, median of the rounds. Wall-clock of syscalls on a loaded machine:
// indicative. Root; the maps are host.o's, pinned under the run's own bpffs directory and removed afterwards.
//   node dist/bench/ct-gc.js [--entries 100000] [--rounds 5]
import { mkdirSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { Collection } from '../src/kernel/bpf/index.js';
import { CT_EGRESS, CT_MAP_ANY, CT_MAP_TCP, ctKeyCodec, ctValueCodec, type CtKey, type CtValue } from '../src/datapath/maps.js';
import { NAT_DIR_IN, NAT_DIR_OUT, NAT_F_MASQ, NatLiveFlows, SNAT_MAP, natGc, natValueCodec } from '../src/datapath/nat.js';
import { monotonicSeconds } from '../src/datapath/ct.js';
import { formatIPv4 } from '../src/util/ip.js';
import { median } from './stats.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NODE_IP = '192.168.78.10';

export interface GcRow {
  variant: string;
  medianMs: number;
  ratio: number;
}

export async function main(): Promise<GcRow[]> {
  const { values } = parseArgs({ options: { entries: { type: 'string' }, rounds: { type: 'string' } } });
  const entries = Number(values.entries ?? 100_000);
  const rounds = Number(values.rounds ?? 5);
  if (process.getuid?.() !== 0) throw new Error('bench/ct-gc needs root (BPF_PROG_LOAD, bpffs)');
  if (!(entries > 0 && entries <= 65_000 * 2)) throw new Error('bench/ct-gc: --entries 1..130000 (the SNAT map holds two entries per flow)');
  const pinRoot = `/sys/fs/bpf/tendril-bench-${process.pid}-ctgc`;
  mkdirSync(pinRoot, { recursive: true });
  let coll: Collection | undefined;
  try {
    coll = Collection.load(root + 'build/bpf/host.o', { pinRoot });
    const ct = [coll.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec), coll.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec)];
    const snat = coll.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
    const now = monotonicSeconds();
    const flows = Math.min(entries, 65_000);
    for (let i = 0; i < entries; i++) {
      const pod = formatIPv4((10 << 24) | (201 << 16) | (i >> 16) << 8 | ((i >> 8) & 0xff));
      const k: CtKey = { saddr: pod, daddr: '203.0.113.10', sport: 1024 + (i & 0xff) * 200 + ((i >> 16) & 0xff), dport: 443, nexthdr: 6, dir: CT_EGRESS, pad: 0 };
      const v: CtValue = { packets: 1n, bytes: 60n, lifetime: now + 3600, srcSecId: 1000, flags: 0, txFlagsSeen: 2, rxFlagsSeen: 2, created: now };
      ct[0]!.put(k, v);
      if (i < flows) {
        const port = 1024 + i;
        snat.put({ ...k, dir: NAT_DIR_OUT }, { toAddr: NODE_IP, toPort: port, flags: NAT_F_MASQ, created: now, lastUsed: 0 });
        snat.put({ saddr: k.daddr, daddr: NODE_IP, sport: k.dport, dport: port, nexthdr: 6, dir: NAT_DIR_IN, pad: 0 }, { toAddr: k.saddr, toPort: k.sport, flags: NAT_F_MASQ, created: now, lastUsed: 0 });
      }
    }
    const ctCount = [...ct[0]!.keys()].length;
    const snatCount = [...snat.keys()].length;
    const variants: Array<[string, () => void]> = [
      ['two walks (natGc walks the CT tables again)', () => {
        let n = 0;
        const t = monotonicSeconds();
        for (const m of ct) for (const [, v] of m.entries()) if (v.lifetime >= t) n++;
        const r = natGc(snat, ct);
        if (r.deleted !== 0 || n !== ctCount) throw new Error(`bench/ct-gc: the GC changed the maps (${JSON.stringify(r)}, ${n})`);
      }],
      ['one walk (CT GC hands the live flows over)', () => {
        const live = new NatLiveFlows();
        const t = monotonicSeconds();
        for (const m of ct) for (const [k, v] of m.entries()) if (v.lifetime >= t) live.add(k, v, t);
        const r = natGc(snat, ct, { live });
        if (r.deleted !== 0 || live.ids.size !== ctCount) throw new Error(`bench/ct-gc: the GC changed the maps (${JSON.stringify(r)}, ${live.ids.size})`);
      }],
    ];
    const times = new Map<string, number[]>(variants.map(([n]) => [n, []]));
    for (let r = 0; r < rounds; r++) {
      for (const [name, fn] of r % 2 ? [...variants].reverse() : variants) {
        const t0 = performance.now();
        fn();
        times.get(name)!.push(performance.now() - t0);
      }
    }
    const base = median(times.get(variants[0]![0])!);
    const rows = variants.map(([variant]) => {
      const m = median(times.get(variant)!);
      return { variant, medianMs: Math.round(m), ratio: Math.round((m / base) * 100) / 100 };
    });
    console.log(`conntrack GC round, ${ctCount} conntrack entries, ${snatCount} NAT entries, ${rounds} rounds by turns (median; loaded machine: indicative)`);
    console.log('| walks | ms per GC round | ratio to two walks |');
    console.log('|---|---|---|');
    for (const r of rows) console.log(`| ${r.variant} | ${r.medianMs} | ${r.ratio.toFixed(2)}x |`);
    return rows;
  } finally {
    coll?.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
