// Phase "lb": same-node TCP_RR and TCP_CRR pod -> ClusterIP vs pod -> the backend's IP, with 1 and with 10,000
// services (4 backends each) in the node's service maps: the per-packet translation's cost, and that a lookup does
// not grow with the number of services.
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { labServiceAdd } from '../src/lab/services.js';
import type { ServiceListEntry } from '../src/lb/index.js';
import { crr, rr } from './load.js';
import { median } from './stats.js';

export interface LbOptions {
  secs: number;
  rounds: number;
  toolsDir: string;
  say: (line: string) => void;
  /** Services in the maps for the second half (default 10,000). */
  services?: number;
}

export interface LbSample {
  /** "direct" (backend IP), "clusterip-1" (1 service), "clusterip-10k". */
  target: string;
  round: number;
  rrTps: number;
  rrP50us: number;
  crrTps: number;
}

export interface LbResult {
  samples: LbSample[];
  services: number;
  /** Wall seconds to create the filler services through the operator and see them in the agent's maps. */
  fillS: number;
}

const RR_PORT = 5555;
const CRR_PORT = 5556;
const FILLER_BACKENDS = 4;

async function measureTarget(o: LbOptions, client: string, server: string, ip: string, target: string, round: number): Promise<LbSample> {
  const rrBin = `${o.toolsDir}/rr`;
  const r = await rr(rrBin, server, client, ip, o.secs);
  const c = await crr(rrBin, server, client, ip, CRR_PORT, o.secs, 0, 1);
  o.say(`lb: round ${round} ${target}: TCP_RR ${r.tps.toFixed(0)}/s (p50 ${r.p50_us} µs), TCP_CRR ${c.tps.toFixed(0)}/s`);
  return { target, round, rrTps: r.tps, rrP50us: r.p50_us, crrTps: c.tps };
}

export async function lbPhase(lab: string, o: LbOptions): Promise<LbResult> {
  const total = o.services ?? 10_000;
  await labDown(lab);
  await labUp({ name: lab, nodes: 1 });
  try {
    const a = await podAdd(lab, 'a', { node: 'ctr', namespace: 'bench', labels: { app: 'bench-a' } });
    const b = await podAdd(lab, 'b', { node: 'ctr', namespace: 'bench', labels: { app: 'bench-b' } });
    for (let i = 0; i < FILLER_BACKENDS; i++) await podAdd(lab, `filler-${i}`, { node: 'ctr', namespace: 'bench', labels: { app: 'filler' } });
    const svc = await labServiceAdd(lab, 'bench', {
      namespace: 'bench',
      selector: { app: 'bench-b' },
      ports: [
        { name: 'rr', port: RR_PORT, targetPort: RR_PORT, protocol: 'TCP' },
        { name: 'crr', port: CRR_PORT, targetPort: CRR_PORT, protocol: 'TCP' },
      ],
      type: 'ClusterIP',
    });
    const vip = svc.clusterIP!;
    const samples: LbSample[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      const order: Array<[string, string]> = round % 2 ? [['direct', b.ip], ['clusterip-1', vip]] : [['clusterip-1', vip], ['direct', b.ip]];
      for (const [t, ip] of order) samples.push(await measureTarget(o, a.netns, b.netns, ip, t, round));
    }
    // The filler services, through the operator as `lab service add` makes them, 16 requests in flight.
    const t0 = Date.now();
    const op = new ApiClient(labPaths(lab).operatorSocket, 'operator');
    let next = 0;
    const filler = total - 1;
    await Promise.all(
      Array.from({ length: 16 }, async () => {
        while (next < filler) {
          const i = next++;
          await op.request('PUT', '/v1/services', {
            service: { namespace: 'bench', name: `filler-${i}`, selector: { app: 'filler' }, ports: [{ port: 80, targetPort: 8080 }] },
          });
          if (i % 1000 === 999) o.say(`lb: ${i + 1} filler services stored`);
        }
      }),
    );
    const agent = new ApiClient(loadLab(lab).nodes[0]!.socket);
    for (;;) {
      const list = await agent.get<ServiceListEntry[]>('/v1/service', 30_000);
      if (list.length >= total + 1 && list.every((e) => e.service === 'bench/bench' || e.backends.length === FILLER_BACKENDS)) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const fillS = (Date.now() - t0) / 1000;
    o.say(`lb: ${total} services (${filler} with ${FILLER_BACKENDS} backends) in the maps after ${fillS.toFixed(1)} s`);
    for (let round = 1; round <= o.rounds; round++) {
      const order: Array<[string, string]> = round % 2 ? [['direct', b.ip], ['clusterip-10k', vip]] : [['clusterip-10k', vip], ['direct', b.ip]];
      for (const [t, ip] of order) samples.push(await measureTarget(o, a.netns, b.netns, ip, t === 'direct' ? 'direct-10k' : t, round));
    }
    return { samples, services: total, fillS };
  } finally {
    await labDown(lab);
  }
}

/** The phase's report section: medians per target and the ratios the issue sets (≥ 0.97×). */
export function lbReport(r: LbResult, o: { secs: number; rounds: number }): string[] {
  const med = (t: string, k: 'rrTps' | 'crrTps' | 'rrP50us'): number => median(r.samples.filter((s) => s.target === t).map((s) => s[k]));
  const row = (t: string, what: string): string => `| ${what} | ${med(t, 'rrTps').toFixed(0)} | ${med(t, 'rrP50us').toFixed(1)} | ${med(t, 'crrTps').toFixed(0)} |`;
  const ratio = (a: string, b: string, k: 'rrTps' | 'crrTps'): string => (med(a, k) / med(b, k)).toFixed(3);
  return [
    `## Services: pod -> ClusterIP vs pod -> backend IP, same node (medians of ${o.rounds} round(s); 1-byte TCP_RR and TCP_CRR ${o.secs} s each, interleaved)`,
    '',
    '| target | TCP_RR /s | RR p50 µs | TCP_CRR /s |',
    '|---|---:|---:|---:|',
    row('direct', 'backend IP (1 service in the maps)'),
    row('clusterip-1', 'ClusterIP, 1 service'),
    row('direct-10k', `backend IP (${r.services} services in the maps)`),
    row('clusterip-10k', `ClusterIP, ${r.services} services`),
    '',
    `- ClusterIP / backend IP, 1 service: TCP_RR ${ratio('clusterip-1', 'direct', 'rrTps')}×, TCP_CRR ${ratio('clusterip-1', 'direct', 'crrTps')}× (target ≥ 0.97×)`,
    `- ClusterIP / backend IP, ${r.services} services: TCP_RR ${ratio('clusterip-10k', 'direct-10k', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k', 'direct-10k', 'crrTps')}×`,
    `- ClusterIP ${r.services} services / 1 service: TCP_RR ${ratio('clusterip-10k', 'clusterip-1', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k', 'clusterip-1', 'crrTps')}× (target ≥ 0.97×)`,
    `- ${r.services - 1} filler services (${FILLER_BACKENDS} backends each) created through the operator API and in the agent's maps in ${r.fillS.toFixed(1)} s`,
    '- per-packet translation in cil_from_container (tc); socket-LB not built. No iptables baseline in this run.',
    '',
  ];
}
