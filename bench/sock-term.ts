// What socket termination costs the agent's event loop with many pods: a backend leaves a service, and socket LB walks
// the TCP and UDP sockets of every pod's network namespace (bpf/sock.c's iterators) to destroy those connected to it.
// N namespaces (default 100, each with a few listening sockets for the iterators to visit), two ways by turns:
// SockLb.terminate() (synchronous: the calling thread enters each namespace in turn, what the agent did before) and
// SockLb.terminateLater() (what the agent does now: one namespace per event-loop turn). Per round: the wall time until
// every namespace was walked, and the longest the event loop waited meanwhile (a 1 ms ticker). Medians; the machine is
// shared and loaded: indicative. Root; the namespaces (unique prefix), the cgroup the sock programs attach to (a child
// of the cgroup v2 root, never the root) and the bpffs directory are the run's own and removed afterwards.
//   node dist/bench/sock-term.js [--netns 100] [--rounds 5]
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { SockLb, type SockTermResult } from '../src/datapath/index.js';
import { closeFd, transparentListener } from '../src/kernel/socket/index.js';
import { Netns, DEFAULT_NETNS_DIR } from '../src/kernel/netns/index.js';
import { cgroup2Root } from '../src/lab/cgroups.js';
import { median } from './stats.js';
import { withLoopStall } from './measure.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const SOCKETS_PER_NETNS = 4;

export interface TermRow {
  variant: string;
  totalMs: number;
  stallMs: number;
}


export async function main(): Promise<TermRow[]> {
  const { values } = parseArgs({ options: { netns: { type: 'string' }, rounds: { type: 'string' } } });
  const n = Number(values.netns ?? 100);
  const rounds = Number(values.rounds ?? 5);
  if (process.getuid?.() !== 0) throw new Error('bench/sock-term needs root (netns, cgroup, BPF)');
  if (!(Number.isInteger(n) && n > 0 && n <= 1000)) throw new Error('bench/sock-term: --netns 1..1000');
  if (!(Number.isInteger(rounds) && rounds > 0)) throw new Error('bench/sock-term: --rounds: a positive integer');
  const tag = `tbst${process.pid}`;
  const pinRoot = `/sys/fs/bpf/tendril-bench-${tag}`;
  const cgroup = path.join(cgroup2Root(), `tendril-bench-${tag}`);
  const names: string[] = [];
  const fds: number[] = [];
  let lb: SockLb | undefined;
  try {
    fs.mkdirSync(pinRoot, { recursive: true });
    fs.mkdirSync(cgroup);
    for (let i = 0; i < n; i++) {
      const name = `${tag}-${i}`;
      const ns = Netns.create(name);
      names.push(name);
      try {
        // Listening sockets made inside the namespace (socket() takes the thread's namespace), synchronously.
        ns.run(() => {
          for (let s = 0; s < SOCKETS_PER_NETNS; s++) fds.push(transparentListener(8000 + s));
        });
      } finally {
        ns.close();
      }
    }
    lb = new SockLb({ objDir: path.join(root, 'build/bpf'), bpfRoot: pinRoot, nodeIP: '192.168.78.10', cgroup });
    lb.start();
    const s = lb;
    const paths = names.map((x) => path.join(DEFAULT_NETNS_DIR, x));
    // A backend nobody is connected to: every socket is visited, none destroyed.
    const backends = [{ ip: '10.201.0.9', port: 8080, proto: 6, revNatIndex: 7 }];
    const variants: Array<[string, () => Promise<SockTermResult>]> = [
      ['terminate(): every namespace in one call (before)', async () => s.terminate(backends, paths)],
      ['terminateLater(): one namespace per event-loop turn (now)', () => new Promise<SockTermResult>((resolve) => s.terminateLater(backends, () => paths, (r) => resolve(r)))],
    ];
    const total = new Map<string, number[]>(variants.map(([v]) => [v, []]));
    const stall = new Map<string, number[]>(variants.map(([v]) => [v, []]));
    for (let r = 0; r < rounds; r++) {
      for (const [v, fn] of r % 2 ? [...variants].reverse() : variants) {
        const [w, st, res] = await withLoopStall(fn);
        if (res.failed.length > 0 || res.destroyed !== 0) throw new Error(`bench/sock-term: ${v}: ${JSON.stringify(res)}`);
        total.get(v)!.push(w);
        stall.get(v)!.push(st);
      }
    }
    const rows = variants.map(([v]) => ({ variant: v, totalMs: Math.round(median(total.get(v)!) * 10) / 10, stallMs: Math.round(median(stall.get(v)!) * 10) / 10 }));
    console.log(`socket termination walk, ${n} pod namespaces (${SOCKETS_PER_NETNS} listening TCP sockets each), ${rounds} rounds by turns (median; loaded machine: indicative)`);
    console.log('| how | ms until every namespace was walked | longest event-loop stall, ms |');
    console.log('|---|---|---|');
    for (const r of rows) console.log(`| ${r.variant} | ${r.totalMs} | ${r.stallMs} |`);
    return rows;
  } finally {
    for (const fd of fds) closeFd(fd);
    lb?.stop();
    for (const x of names) {
      try {
        Netns.delete(x);
      } catch (err) {
        console.error(`bench/sock-term: cannot delete netns ${x}: ${(err as Error).message}`);
      }
    }
    fs.rmSync(pinRoot, { recursive: true, force: true });
    // The links were not pinned anywhere but pinRoot: with the programs closed the cgroup is empty and can go.
    try {
      fs.rmdirSync(cgroup);
    } catch (err) {
      console.error(`bench/sock-term: cannot remove ${cgroup}: ${(err as Error).message}`);
    }
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().then(() => process.exit(0), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
