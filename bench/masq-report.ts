// The masquerade phase's table and verdicts (pure: samples in, markdown out).
import { median } from './stats.js';
import { verdict, type Measured, type RR, type Verdict } from './report.js';

/** Pod -> external host: Tendril's BPF masquerade, the reference ptp plugin with ipMasq (iptables), plain routing. */
export const MASQ_TENDRIL = 'tendril-bpf-masq';
export const MASQ_PTP = 'ptp-iptables-masq';
export const MASQ_ROUTED = 'routed-no-nat';
export const MASQ_ORDER = [MASQ_ROUTED, MASQ_PTP, MASQ_TENDRIL] as const;

export interface MasqSample {
  round: number;
  scenario: string;
  gbps: Measured<number>;
  rr: Measured<RR>;
  /** Connections per second of one client (connect, 1 byte there and back, close): every one a new NAT entry. */
  crr: Measured<number>;
}

export interface MasqRow {
  scenario: string;
  n: number;
  gbps: number;
  rr: RR;
  crr: number;
}

export function masqRows(samples: readonly MasqSample[]): MasqRow[] {
  return MASQ_ORDER.map((scenario) => {
    const s = samples.filter((x) => x.scenario === scenario);
    return {
      scenario,
      n: s.length,
      gbps: median(s.map((x) => x.gbps.value)),
      rr: { tps: median(s.map((x) => x.rr.value.tps)), p50us: median(s.map((x) => x.rr.value.p50us)), p99us: median(s.map((x) => x.rr.value.p99us)) },
      crr: median(s.map((x) => x.crr.value)),
    };
  }).filter((r) => r.n > 0);
}

function fix(x: number, d: number): string {
  return Number.isFinite(x) ? x.toFixed(d) : 'n/a';
}

function ratios(r: MasqRow, base: MasqRow | undefined): string {
  if (!base) return 'n/a';
  return `${fix(r.gbps / base.gbps, 2)} / ${fix(r.rr.tps / base.rr.tps, 2)} / ${fix(r.crr / base.crr, 2)}`;
}

export function masqTable(rows: readonly MasqRow[]): string {
  const ptp = rows.find((r) => r.scenario === MASQ_PTP);
  const routed = rows.find((r) => r.scenario === MASQ_ROUTED);
  const lines = [
    '| scenario | Gbit/s | TCP_RR trans/s | RR p50/p99 µs | TCP_CRR conn/s | ratio vs ptp+iptables (stream / RR / CRR) | ratio vs routed (stream / RR / CRR) |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    lines.push(`| ${r.scenario} | ${fix(r.gbps, 2)} | ${fix(r.rr.tps, 0)} | ${fix(r.rr.p50us, 1)} / ${fix(r.rr.p99us, 1)} | ${fix(r.crr, 0)} | ${ratios(r, ptp)} | ${ratios(r, routed)} |`);
  }
  return lines.join('\n');
}

export function masqSamplesTable(samples: readonly MasqSample[]): string {
  const lines = ['| round | scenario | Gbit/s | TCP_RR trans/s | TCP_CRR conn/s | foreign % stream / RR / CRR | attempts |', '|---|---|---|---|---|---|---|'];
  for (const s of samples) {
    lines.push(
      `| ${s.round} | ${s.scenario} | ${fix(s.gbps.value, 2)} | ${fix(s.rr.value.tps, 0)} | ${fix(s.crr.value, 0)} | ` +
        `${fix(s.gbps.foreignPct, 0)} / ${fix(s.rr.foreignPct, 0)} / ${fix(s.crr.foreignPct, 0)} | ${s.gbps.attempts} / ${s.rr.attempts} / ${s.crr.attempts} |`,
    );
  }
  return lines.join('\n');
}

/** The targets: >= 1.0x ptp+iptables on all three, >= 0.95x routed on RR and CRR. */
export function masqVerdicts(rows: readonly MasqRow[]): Verdict[] {
  const t = rows.find((r) => r.scenario === MASQ_TENDRIL);
  const ptp = rows.find((r) => r.scenario === MASQ_PTP);
  const routed = rows.find((r) => r.scenario === MASQ_ROUTED);
  if (!t && !ptp && !routed) return [];
  const g = (r: MasqRow | undefined) => r?.gbps ?? NaN;
  const x = (r: MasqRow | undefined) => r?.rr.tps ?? NaN;
  const c = (r: MasqRow | undefined) => r?.crr ?? NaN;
  return [
    verdict('pod -> external TCP throughput, BPF masquerade vs ptp+iptables MASQUERADE', g(t), g(ptp), 'Gbit/s', '>=', 1.0),
    verdict('pod -> external TCP_RR, BPF masquerade vs ptp+iptables MASQUERADE', x(t), x(ptp), 'trans/s', '>=', 1.0),
    verdict('pod -> external TCP_CRR, BPF masquerade vs ptp+iptables MASQUERADE', c(t), c(ptp), 'trans/s', '>=', 1.0),
    verdict('pod -> external TCP_RR, BPF masquerade vs routed (no NAT)', x(t), x(routed), 'trans/s', '>=', 0.95),
    verdict('pod -> external TCP_CRR, BPF masquerade vs routed (no NAT)', c(t), c(routed), 'trans/s', '>=', 0.95),
  ];
}
