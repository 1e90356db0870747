// Time of one conntrack GC pass (ctGcPass(): walk the conntrack tables, then the NAT GC over the live flows it hands
// over) with N conntrack entries in the TCP table (default 10,000 and 100,000) and the masquerade mappings of up to
// 60,000 of those flows (an OUT and an IN entry each, 120,000 of the SNAT map's 131,072), run two ways by turns:
// in the calling thread (what the agent's event loop paid before the GC thread) and on the GC thread (CtGcThread, what
// the agent runs now). Per pass: the wall time, and the longest the main thread's event loop waited meanwhile (a 1 ms
// ticker; in the calling thread that is the whole pass). Every entry is live, so no pass deletes anything and each
// sees the same maps (checked). Medians of the rounds; wall-clock of syscalls on a loaded machine: indicative.
// Root; the maps are host.o's, pinned under the run's own bpffs directory and removed afterwards.
//   node dist/bench/ct-gc.js [--entries 10000,100000] [--rounds 5]
import { mkdirSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { Collection } from '../src/kernel/bpf/index.js';
import { CT_EGRESS, CT_MAP_ANY, CT_MAP_SIZE_TCP, CT_MAP_TCP, ctKeyCodec, ctValueCodec, type CtKey, type CtValue } from '../src/datapath/maps.js';
import { NAT_DIR_IN, NAT_DIR_OUT, NAT_F_MASQ, SNAT_MAP, natValueCodec } from '../src/datapath/nat.js';
import { CtGcThread, ctGcPass, ctGcPins, type CtGcOptions, type CtGcResult } from '../src/datapath/ct-gc.js';
import { monotonicSeconds } from '../src/datapath/ct.js';
import { formatIPv4 } from '../src/util/ip.js';
import { median } from './stats.js';
import { withLoopStall } from './measure.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const NODE_IP = '192.168.78.10';
/** Flows with a masquerade mapping: two SNAT entries each, below the SNAT map's 131,072 (an LRU evicts when full). */
const MAX_NAT_FLOWS = 60_000;
const OPTS: CtGcOptions = { egressIps: new Set(), idle: { tcp: 21600, any: 60 } };

export interface GcRow {
  entries: number;
  natEntries: number;
  variant: string;
  /** Wall time of one pass (median). */
  passMs: number;
  /** Longest wait of the main thread's event loop during a pass (median over the passes). */
  stallMs: number;
  /** passMs over the calling thread's, same entries. */
  ratio: number;
}

/** Fills the pinned maps of `coll` with `entries` live TCP flows; returns the NAT entry count. Throws if a map lost any. */
function fill(coll: Collection, entries: number): number {
  const ct = coll.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec);
  const snat = coll.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec);
  const now = monotonicSeconds();
  const flows = Math.min(entries, MAX_NAT_FLOWS);
  for (let i = 0; i < entries; i++) {
    // Pod 10.201.x.y (one per 256 flows), 4 far ends (one per 32,768 flows) so the NAT ports stay below 65,536.
    const pod = formatIPv4(((10 << 24) | (201 << 16) | ((i >> 8) & 0xffff)) >>> 0);
    const far = formatIPv4(((203 << 24) | (0 << 16) | (113 << 8) | (10 + (i >> 15))) >>> 0);
    const k: CtKey = { saddr: pod, daddr: far, sport: 1024 + (i & 0xff), dport: 443, nexthdr: 6, dir: CT_EGRESS, pad: 0 };
    const v: CtValue = { packets: 1n, bytes: 60n, lifetime: now + 3600, srcSecId: 1000, flags: 0, txFlagsSeen: 2, rxFlagsSeen: 2, created: now };
    ct.put(k, v);
    if (i < flows) {
      const port = 1024 + (i & 0x7fff);
      snat.put({ ...k, dir: NAT_DIR_OUT }, { toAddr: NODE_IP, toPort: port, flags: NAT_F_MASQ, created: now, lastUsed: 0 });
      snat.put({ saddr: far, daddr: NODE_IP, sport: 443, dport: port, nexthdr: 6, dir: NAT_DIR_IN, pad: 0 }, { toAddr: pod, toPort: k.sport, flags: NAT_F_MASQ, created: now, lastUsed: 0 });
    }
  }
  const ctCount = [...ct.keys()].length;
  const natCount = [...snat.keys()].length;
  if (ctCount !== entries || natCount !== 2 * flows) {
    throw new Error(`bench/ct-gc: the fill lost entries (conntrack ${ctCount} of ${entries}, NAT ${natCount} of ${2 * flows})`);
  }
  return natCount;
}


async function measure(entries: number, rounds: number): Promise<GcRow[]> {
  const pinRoot = `/sys/fs/bpf/tendril-bench-${process.pid}-ctgc-${entries}`;
  mkdirSync(pinRoot, { recursive: true });
  let coll: Collection | undefined;
  let thread: CtGcThread | undefined;
  try {
    coll = Collection.load(root + 'build/bpf/host.o', { pinRoot });
    const natEntries = fill(coll, entries);
    const maps = { ct: [coll.map(CT_MAP_TCP).typed(ctKeyCodec, ctValueCodec), coll.map(CT_MAP_ANY).typed(ctKeyCodec, ctValueCodec)], snat: coll.map(SNAT_MAP).typed(ctKeyCodec, natValueCodec) };
    const gc = new CtGcThread(ctGcPins(pinRoot));
    thread = gc;
    await gc.run(OPTS); // starts the worker (its start is not a pass)
    const variants: Array<[string, () => Promise<CtGcResult> | CtGcResult]> = [
      ['in the calling thread (ctGcPass)', () => ctGcPass(maps, OPTS)],
      ['on the GC thread (CtGcThread)', () => gc.run(OPTS)],
    ];
    const wall = new Map<string, number[]>(variants.map(([n]) => [n, []]));
    const stall = new Map<string, number[]>(variants.map(([n]) => [n, []]));
    for (let r = 0; r < rounds; r++) {
      for (const [name, fn] of r % 2 ? [...variants].reverse() : variants) {
        const [w, s, res] = await withLoopStall(fn);
        if (res.deleted !== 0 || res.natDeleted !== 0 || res.alive !== entries) throw new Error(`bench/ct-gc: a pass changed the maps (${JSON.stringify(res)})`);
        wall.get(name)!.push(w);
        stall.get(name)!.push(s);
      }
    }
    const base = median(wall.get(variants[0]![0])!);
    return variants.map(([variant]) => {
      const m = median(wall.get(variant)!);
      return { entries, natEntries, variant, passMs: Math.round(m * 10) / 10, stallMs: Math.round(median(stall.get(variant)!) * 10) / 10, ratio: Math.round((m / base) * 100) / 100 };
    });
  } finally {
    thread?.stop();
    coll?.close();
    rmSync(pinRoot, { recursive: true, force: true });
  }
}

export async function main(): Promise<GcRow[]> {
  const { values } = parseArgs({ options: { entries: { type: 'string' }, rounds: { type: 'string' } } });
  const sizes = (values.entries ?? '10000,100000').split(',').map(Number);
  const rounds = Number(values.rounds ?? 5);
  if (process.getuid?.() !== 0) throw new Error('bench/ct-gc needs root (BPF_PROG_LOAD, bpffs)');
  for (const n of sizes) if (!(Number.isInteger(n) && n > 0 && n <= CT_MAP_SIZE_TCP * 0.9)) throw new Error(`bench/ct-gc: --entries: each 1..${Math.floor(CT_MAP_SIZE_TCP * 0.9)} (the TCP conntrack table holds ${CT_MAP_SIZE_TCP})`);
  if (!(Number.isInteger(rounds) && rounds > 0)) throw new Error('bench/ct-gc: --rounds: a positive integer');
  const rows: GcRow[] = [];
  for (const n of sizes) rows.push(...(await measure(n, rounds)));
  console.log(`conntrack GC pass, ${rounds} rounds by turns per size (median; loaded machine: indicative)`);
  console.log('| conntrack entries | NAT entries | where the pass runs | ms per pass | main loop stall, ms | ratio to the calling thread |');
  console.log('|---|---|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.entries} | ${r.natEntries} | ${r.variant} | ${r.passMs} | ${r.stallMs} | ${r.ratio.toFixed(2)}x |`);
  return rows;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(() => process.exit(0), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
