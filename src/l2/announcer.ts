// The agent's L2 announcer: for every LoadBalancer IP exactly one node answers ARP on the underlay. The node is
// elected through the store with a lease per IP (kind L2Lease, named by the IP): the holder renews it every
// renewMs; another node takes it over once it saw no renewal for leaseDurationMs (by its own monotonic clock, so
// clock skew between nodes does not matter), with expectedRevision so two takers cannot both win. The IPs whose
// lease this node holds are written to tendril_l2_responder, which cil_from_netdev answers ARP from. On taking an IP
// it sends gratuitous ARP on the device (garp.ts), so the segment's hosts move to this node's MAC at once.
import type { TypedMap } from '../kernel/bpf/index.js';
import type { Resource, Store } from '../store/index.js';
import type { Logger } from '../util/log.js';
import type { L2ResponderEntry } from './maps.js';
import { garpFrames } from './garp.js';

export const DEFAULT_L2_LEASE_MS = 3000;
export const DEFAULT_L2_RENEW_MS = 1000;
/** Gratuitous ARP rounds per takeover: at once and at the next renewal (one lost broadcast is not the end of it). */
export const GARP_ROUNDS = 2;

/** L2Lease resource value. */
export interface L2LeaseSpec {
  holder: string;
  /** ISO time of the last renewal (informational: takeover uses the observer's own clock). */
  renewTime: string;
  leaseDurationMs: number;
}

export interface L2AnnouncerOptions {
  store: Store;
  node: string;
  log: Logger;
  /** The device ARP is answered on and the MAC the replies carry (the node's native device). */
  device: () => { ifindex: number; mac: string };
  responder: TypedMap<string, L2ResponderEntry>;
  leaseDurationMs?: number;
  renewMs?: number;
  /**
   * Whether this node may announce the IP (default: always). The agent answers false for a LoadBalancer IP of an
   * externalTrafficPolicy Local service without a backend on this node: such a node does not take the lease, and
   * hands it back when it holds it (its last local backend went), so a node with one takes over at once.
   */
  mayAnnounce?: (ip: string) => boolean;
  /**
   * Sends a whole Ethernet frame out of the device (the agent: src/kernel/socket's sendFrame). Given, a node that
   * takes an IP sends gratuitous ARP for it; absent, none (hosts then move when their entry goes stale).
   */
  sendFrame?: (ifindex: number, frame: Buffer) => void;
}

export interface L2AnnouncementView {
  ip: string;
  holder: string | null;
  announcedHere: boolean;
}

interface ServiceStatusLike {
  loadBalancer?: { ingress?: string[] };
}

function isConflict(err: unknown): boolean {
  return (err as { code?: string }).code === 'TENDRIL_ERR_STORE_CONFLICT';
}

export class L2Announcer {
  private readonly o: L2AnnouncerOptions;
  private readonly leaseMs: number;
  private readonly renewMs: number;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private tickRun: Promise<void> | undefined;
  /** ip -> the lease revision last seen and when (performance.now()) it was first seen. */
  private readonly seen = new Map<string, { revision: number; at: number }>();
  private mine = new Set<string>();
  private view: L2AnnouncementView[] = [];
  private lastError: string | null = null;
  /** ip -> gratuitous ARP rounds still to send for this node's takeover of it. */
  private readonly garpLeft = new Map<string, number>();
  private garpSent = 0;
  private garpError: string | null = null;

  constructor(o: L2AnnouncerOptions) {
    this.o = o;
    this.leaseMs = o.leaseDurationMs ?? DEFAULT_L2_LEASE_MS;
    this.renewMs = o.renewMs ?? DEFAULT_L2_RENEW_MS;
  }

  start(): void {
    this.running = true;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (!this.running) return;
    this.timer = setTimeout(() => {
      this.tickRun = this.tick()
        .catch((err: unknown) => {
          this.lastError = (err as Error).message;
          this.o.log.warn({ err: (err as Error).message }, 'L2 announcement pass failed');
        })
        .finally(() => {
          this.tickRun = undefined;
          this.schedule(this.renewMs);
        });
    }, ms);
  }

  /** Stops renewing, hands back this node's leases (another node takes over at once) and stops answering. */
  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    await this.tickRun;
    for (const ip of this.mine) {
      const cur = await this.o.store.get<L2LeaseSpec>('L2Lease', ip).catch(() => undefined);
      if (cur?.value.holder === this.o.node) await this.o.store.delete('L2Lease', ip, { expectedRevision: cur.revision }).catch(() => undefined);
    }
    for (const ip of this.mine) this.o.responder.delete(ip);
    this.mine.clear();
  }

  private async tick(): Promise<void> {
    const [statuses, leases] = await Promise.all([this.o.store.list<ServiceStatusLike>('ServiceStatus'), this.o.store.list<L2LeaseSpec>('L2Lease')]);
    const ips = new Set<string>();
    for (const r of statuses.items) for (const ip of r.value.loadBalancer?.ingress ?? []) ips.add(ip);
    const byIp = new Map(leases.items.map((r) => [r.name, r]));
    const now = performance.now();
    const mine = new Set<string>();
    const view: L2AnnouncementView[] = [];
    for (const ip of [...ips].sort()) {
      const l = byIp.get(ip);
      let holder = l?.value.holder ?? null;
      if (this.o.mayAnnounce && !this.o.mayAnnounce(ip)) {
        if (l?.value.holder === this.o.node) {
          await this.o.store.delete('L2Lease', ip, { expectedRevision: l.revision }).catch(() => undefined);
          this.o.log.info({ ip }, 'handed back the L2 announcement: no local backend of the service');
          holder = null;
        }
        // Another node's lease: watched as usual, never taken over.
        if (l && holder !== null) {
          const s = this.seen.get(ip);
          if (!s || s.revision !== l.revision) this.seen.set(ip, { revision: l.revision, at: now });
        }
      } else if (!l) {
        if (await this.take(ip, 0)) holder = this.o.node;
      } else if (l.value.holder === this.o.node) {
        if (await this.take(ip, l.revision)) holder = this.o.node;
        else holder = null;
      } else {
        const s = this.seen.get(ip);
        if (!s || s.revision !== l.revision) this.seen.set(ip, { revision: l.revision, at: now });
        else if (now - s.at > l.value.leaseDurationMs) {
          if (await this.take(ip, l.revision)) {
            this.o.log.info({ ip, from: l.value.holder }, 'took over the L2 announcement of an expired lease');
            holder = this.o.node;
          }
        }
      }
      if (holder === this.o.node) mine.add(ip);
      view.push({ ip, holder, announcedHere: holder === this.o.node });
    }
    // Leases of IPs no service has any more: the holder removes them.
    for (const [ip, l] of byIp) {
      if (!ips.has(ip) && l.value.holder === this.o.node) await this.o.store.delete('L2Lease', ip, { expectedRevision: l.revision }).catch(() => undefined);
      if (!ips.has(ip)) this.seen.delete(ip);
    }
    this.apply(mine);
    this.view = view;
    this.lastError = null;
  }

  /** Writes the lease as this node's (create, renew or take over); false when another node won. */
  private async take(ip: string, expectedRevision: number): Promise<boolean> {
    const value: L2LeaseSpec = { holder: this.o.node, renewTime: new Date().toISOString(), leaseDurationMs: this.leaseMs };
    try {
      const r: Resource<L2LeaseSpec> = await this.o.store.put('L2Lease', ip, value, { expectedRevision });
      this.seen.set(ip, { revision: r.revision, at: performance.now() });
      return true;
    } catch (err) {
      if (isConflict(err)) return false;
      throw err;
    }
  }

  private apply(mine: Set<string>): void {
    const dev = this.o.device();
    // Valid for one lease from now (the lease was just written): a node whose agent stops renewing stops answering.
    const expiresNs = process.hrtime.bigint() + BigInt(this.leaseMs) * 1_000_000n;
    for (const ip of mine) {
      this.o.responder.put(ip, { ifindex: dev.ifindex, mac: dev.mac, expiresNs });
      if (!this.mine.has(ip)) {
        this.o.log.info({ ip, device: dev.ifindex }, 'announcing LoadBalancer IP');
        if (this.o.sendFrame) this.garpLeft.set(ip, GARP_ROUNDS);
      }
      // After the responder entry: a host that answers the gratuitous request with a request of its own is answered.
      this.gratuitousArp(ip, dev);
    }
    for (const ip of this.mine) {
      if (!mine.has(ip)) {
        this.garpLeft.delete(ip);
        this.o.responder.delete(ip);
        this.o.log.info({ ip }, 'no longer announcing LoadBalancer IP');
      }
    }
    // Entries an earlier run left that this node no longer holds.
    for (const [ip] of this.o.responder.entries()) if (!mine.has(ip)) this.o.responder.delete(ip);
    this.mine = mine;
  }

  private gratuitousArp(ip: string, dev: { ifindex: number; mac: string }): void {
    const left = this.garpLeft.get(ip) ?? 0;
    if (left <= 0 || !this.o.sendFrame) return;
    if (left === 1) this.garpLeft.delete(ip);
    else this.garpLeft.set(ip, left - 1);
    try {
      for (const f of garpFrames(ip, dev.mac)) {
        this.o.sendFrame(dev.ifindex, f);
        this.garpSent++;
      }
      this.garpError = null;
    } catch (err) {
      this.garpError = (err as Error).message;
      this.o.log.warn({ ip, err: this.garpError }, 'cannot send gratuitous ARP for the LoadBalancer IP');
    }
  }

  list(): L2AnnouncementView[] {
    return this.view;
  }

  status(): { enabled: true; announced: number; leases: number; leaseDurationMs: number; lastError: string | null; gratuitousArpSent: number; gratuitousArpError: string | null } {
    return { enabled: true, announced: this.mine.size, leases: this.view.length, leaseDurationMs: this.leaseMs, lastError: this.lastError, gratuitousArpSent: this.garpSent, gratuitousArpError: this.garpError };
  }
}
