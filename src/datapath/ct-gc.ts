// Conntrack garbage collection: one pass deletes the expired conntrack entries (the datapath never deletes them,
// LRU only evicts under pressure) and the NAT entries of flows whose conntrack entry is gone. A pass over full
// tables walks a few hundred thousand entries: on the agent's event loop that held every API call, CNI ADD and
// store watch for hundreds of milliseconds (a service change waited 484 ms behind one). So the agent runs passes
// on a worker thread (CtGcThread) with its own descriptors of the pinned maps, as Cilium runs its GC in a
// goroutine of its own; ctGcPass() is the pass itself, also what NodeDatapath.ctGc() runs in the caller's thread.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { TypedMap } from '../kernel/bpf/index.js';
import { CT_MAP_ANY, CT_MAP_SIZE_ANY, CT_MAP_SIZE_TCP, CT_MAP_TCP, type CtKey, type CtValue } from './maps.js';
import { NatLiveFlows, SNAT_MAP, SNAT_MAP_SIZE, natGc, type EgressIdle, type NatValue } from './nat.js';
import { monotonicSeconds } from './ct.js';
import { DatapathError } from './errors.js';

export interface CtGcMaps {
  /** The TCP table, then the other protocols' (CT_MAP_TCP, CT_MAP_ANY). */
  ct: ReadonlyArray<TypedMap<CtKey, CtValue>>;
  snat: TypedMap<CtKey, NatValue>;
}

export interface CtGcOptions {
  /** The egress IPs this node is the gateway of: their flows' conntrack entries are on other nodes. */
  egressIps: ReadonlySet<string>;
  idle: EgressIdle;
}

export interface CtGcResult {
  deleted: number;
  alive: number;
  natDeleted: number;
  /** How full the fullest table was before the pass (0..1), for the adaptive interval (ctGcIntervalMs()). */
  fill: number;
}

/** One GC pass in the calling thread. */
export function ctGcPass(maps: CtGcMaps, opts: CtGcOptions): CtGcResult {
  const now = monotonicSeconds();
  let deleted = 0;
  let alive = 0;
  let fill = 0;
  const sizes = [CT_MAP_SIZE_TCP, CT_MAP_SIZE_ANY];
  // One walk of the tables: the NAT GC gets the flows that stay from it (natGc() would walk them again).
  const live = new NatLiveFlows();
  maps.ct.forEach((m, i) => {
    const doomed: CtKey[] = [];
    let n = 0;
    for (const [k, v] of m.entries()) {
      n++;
      if (v.lifetime < now) doomed.push(k);
      else {
        alive++;
        live.add(k, v, now);
      }
    }
    fill = Math.max(fill, n / (sizes[i] ?? CT_MAP_SIZE_TCP));
    deleted += m.deleteMany(doomed);
  });
  const nat = natGc(maps.snat, maps.ct, { live, egressIps: opts.egressIps, idle: opts.idle });
  fill = Math.max(fill, (nat.deleted + nat.alive) / SNAT_MAP_SIZE);
  return { deleted, alive, natDeleted: nat.deleted, fill: Math.round(fill * 1000) / 1000 };
}

/** The pins a GC thread opens: the maps are pinned by name under the node's bpffs root. */
export function ctGcPins(bpfRoot: string): { ct: [string, string]; snat: string } {
  return { ct: [path.join(bpfRoot, CT_MAP_TCP), path.join(bpfRoot, CT_MAP_ANY)], snat: path.join(bpfRoot, SNAT_MAP) };
}

/** Messages between CtGcThread and its worker (ct-gc-worker.ts). */
export type CtGcRequest = { id: number; egressIps: string[]; idle: EgressIdle } | { stop: true };
export type CtGcReply = { id: number; result: CtGcResult } | { id: number; error: string };

/**
 * A worker thread that runs GC passes over the pinned maps, one at a time; started on the first pass, stopped by
 * stop() (it closes its descriptors and exits).
 */
export class CtGcThread {
  private worker: Worker | undefined;
  private next = 1;
  private readonly pending = new Map<number, { resolve: (r: CtGcResult) => void; reject: (e: Error) => void }>();

  constructor(private readonly pins: { ct: [string, string]; snat: string }) {}

  run(opts: CtGcOptions): Promise<CtGcResult> {
    const w = this.worker ?? this.spawn();
    const id = this.next++;
    return new Promise<CtGcResult>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, egressIps: [...opts.egressIps], idle: opts.idle } satisfies CtGcRequest);
    });
  }

  /** Asks the worker to close its maps and exit; passes still pending are rejected. */
  stop(): void {
    const w = this.worker;
    this.worker = undefined;
    if (!w) return;
    w.postMessage({ stop: true } satisfies CtGcRequest);
    w.unref();
    this.failAll('the conntrack GC thread was stopped');
  }

  private spawn(): Worker {
    const w = new Worker(new URL('./ct-gc-worker.js', import.meta.url), { workerData: this.pins });
    w.on('message', (m: CtGcReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if ('result' in m) p.resolve(m.result);
      else p.reject(new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Conntrack GC failed: ${m.error}`));
    });
    w.on('error', (err) => this.failAll(`the conntrack GC thread failed: ${err.message}`));
    w.on('exit', () => {
      if (this.worker === w) this.worker = undefined;
      this.failAll('the conntrack GC thread exited');
    });
    this.worker = w;
    return w;
  }

  private failAll(why: string): void {
    for (const p of this.pending.values()) p.reject(new DatapathError('TENDRIL_ERR_DATAPATH_STATE', `Conntrack GC did not finish: ${why}`));
    this.pending.clear();
  }
}
