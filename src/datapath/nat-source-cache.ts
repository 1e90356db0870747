// The translated source of a flow's to-network events (Hubble's source_xlated), remembered per flow for a moment:
// a connection's SYN, first ACK and FIN each report to-network, and each answer costs the NAT map lookups
// (natLookupOut(): two bpf() calls). A short-lived TCP connection then costs them once instead of three times.

/** How long an answer is reused: far below any NAT entry's life (its flow's conntrack lifetime, >= 10 s). */
export const NAT_SOURCE_TTL_MS = 2_000;
/** Flows remembered at most; the oldest is forgotten first. */
export const NAT_SOURCE_MAX = 8_192;

export interface FlowTuple {
  protocol: number;
  src: string;
  sport: number;
  dst: string;
  dport: number;
}

/**
 * Remembers `lookup`'s found answers (a flow without a translation is asked again next time: its entry may be
 * about to appear, the event being read before the packet reached the native device).
 */
export class NatSourceCache {
  private readonly seen = new Map<string, { addr: string; until: number }>();

  constructor(
    private readonly lookup: (t: FlowTuple) => string | undefined,
    private readonly now: () => number = () => performance.now(),
    private readonly ttlMs = NAT_SOURCE_TTL_MS,
    private readonly max = NAT_SOURCE_MAX,
  ) {}

  get(t: FlowTuple): string | undefined {
    const key = `${t.protocol} ${t.src} ${t.sport} ${t.dst} ${t.dport}`;
    const now = this.now();
    const hit = this.seen.get(key);
    if (hit !== undefined) {
      if (hit.until > now) return hit.addr;
      this.seen.delete(key);
    }
    const addr = this.lookup(t);
    if (addr !== undefined) {
      if (this.seen.size >= this.max) {
        const oldest = this.seen.keys().next();
        if (!oldest.done) this.seen.delete(oldest.value);
      }
      this.seen.set(key, { addr, until: now + this.ttlMs });
    }
    return addr;
  }

  /** Forgets every answer (the NAT map was flushed). */
  clear(): void {
    this.seen.clear();
  }

  get size(): number {
    return this.seen.size;
  }
}
