// Phase "lb": same-node TCP_RR and TCP_CRR pod -> ClusterIP vs pod -> the backend's IP, with 1 and with 10,000
// services (4 backends each) in the node's service maps: the per-packet translation's cost, and that a lookup does
// not grow with the number of services.
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { removeNetnsCgroup } from '../src/lab/cgroups.js';
import { labServiceAdd } from '../src/lab/services.js';
import type { ServiceListEntry } from '../src/lb/index.js';
import { crr, rr } from './load.js';
import { kpVip, kubeProxyRules, type KpService } from './kube-proxy.js';
import { inNs, kill, run, start } from './proc.js';
import { median, percentile } from './stats.js';

export interface LbOptions {
  secs: number;
  rounds: number;
  toolsDir: string;
  say: (line: string) => void;
  /** Services in the maps for the second half (default 10,000). */
  services?: number;
  /** Change-latency samples with 1,000 services (default 50). */
  latencySamples?: number;
}

export interface LbSample {
  /** "direct" (backend IP), "clusterip-1" (1 service), "clusterip-10k", "iptables-10k" (kube-proxy rules). */
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
  /** Milliseconds from a new service's PUT returning to the first connection through it, with ~1,000 services. */
  changeMs: number[];
  /** Services in the maps when the change latency was measured. */
  changeAt: number;
  /** iptables rules the kube-proxy baseline loaded (nat table). */
  iptablesRules: number;
  iptablesBackend: string;
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


async function podIp(lab: string, name: string): Promise<string> {
  const p = loadLab(lab).pods.find((x) => x.name === name);
  if (!p) throw new Error(`lb: pod ${name} not in the lab state`);
  return p.ip;
}

/** Filler services [from, to) through the operator, 16 requests in flight. */
async function fill(o: LbOptions, op: ApiClient, from: number, to: number): Promise<void> {
  let next = from;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < to) {
        const i = next++;
        await op.request('PUT', '/v1/services', {
          service: { namespace: 'bench', name: `filler-${i}`, selector: { app: 'filler' }, ports: [{ port: 80, targetPort: 8080 }] },
        });
        if (i % 1000 === 999) o.say(`lb: ${i + 1} filler services stored`);
      }
    }),
  );
}

/** Until the agent's maps hold `count` filler+bench services (and `extra` latency ones), fillers with every backend. */
async function untilServices(agent: ApiClient, count: number, extra: number): Promise<void> {
  const deadline = Date.now() + 30 * 60_000;
  for (;;) {
    const list = await agent.get<ServiceListEntry[]>('/v1/service', 60_000);
    const fill = list.filter((e) => e.service.startsWith('bench/filler-'));
    if (list.length >= count + extra && fill.every((e) => e.backends.length === FILLER_BACKENDS)) return;
    if (Date.now() > deadline) throw new Error(`lb: ${list.length} of ${count + extra} services in the agent's maps after 30 min`);
    await new Promise((r) => setTimeout(r, 500));
  }
}

const LAT_PORT = 7000;
/** In the client pod: connects to ip:port every few ms (10 ms connect timeout) and prints "ok <epoch ms>" when one succeeds. */
const PROBE = `
const net = require('net'); const [ip, port, max] = process.argv.slice(1); const t0 = Date.now();
function go() {
  if (Date.now() - t0 > Number(max)) { console.log('timeout'); process.exit(1); }
  const s = net.connect({ host: ip, port: Number(port) });
  const t = setTimeout(() => { s.destroy(); go(); }, 10);
  s.on('connect', () => { console.log('ok ' + Date.now()); process.exit(0); });
  s.on('error', () => { clearTimeout(t); setTimeout(go, 2); });
}
console.log('ready'); go();`;

/**
 * Milliseconds from a new service's PUT (the operator stored it) returning to the first connection from the client
 * pod through its ClusterIP: the store watch, the agent's translation and the map writes. The address is given
 * (from the end of the service CIDR) so the probe runs before the PUT; a connection before the maps hold it fails.
 */
async function changeLatency(o: LbOptions, op: ApiClient, client: string, server: string, samples: number): Promise<number[]> {
  const srv = start(inNs(server, ['node', '-e', `require('net').createServer((c) => c.destroy()).listen(${LAT_PORT}, () => console.log('ready'))`]));
  const out: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const vip = `10.111.${250 + Math.floor(i / 254)}.${(i % 254) + 1}`;
      let ready!: () => void;
      const isReady = new Promise<void>((r) => (ready = r));
      let text = '';
      const probe = start(inNs(client, ['node', '-e', PROBE, vip, '80', '60000']), {
        onStdout: (d) => {
          text += d.toString();
          if (text.includes('ready')) ready();
        },
      });
      await Promise.race([isReady, probe.exited]);
      await op.request('PUT', '/v1/services', {
        service: { namespace: 'bench', name: `lat-${i}`, clusterIP: vip, selector: { app: 'bench-b' }, ports: [{ port: 80, targetPort: LAT_PORT }] },
      });
      const stored = Date.now();
      await probe.exited;
      const m = /ok (\d+)/.exec(text);
      if (!m) throw new Error(`lb: no connection through new service ${vip} within 60 s: ${text.trim()}`);
      out.push(Math.max(0, Number(m[1]) - stored));
    }
  } finally {
    kill(srv.pid);
  }
  const sorted = out;
  o.say(`lb: change latency p50 ${percentile(sorted, 0.5).toFixed(0)} ms, p99 ${percentile(sorted, 0.99).toFixed(0)} ms (${out.length} samples: ${[...out].sort((x, y) => x - y).join(" ")} ms)`);
  return out;
}

/** kube-proxy's rules for `total` services: fillers to the filler pods, the bench service (rr and crr ports) to b in the middle. */
export function iptablesBaseline(total: number, fillers: string[], backend: string): { text: string; rules: number; vip: string; position: number } {
  const position = Math.floor(total / 2);
  const svcs: KpService[] = [];
  let vip = '';
  for (let i = 0; i < total; i++) {
    if (i === position) {
      vip = kpVip('10.200', i);
      for (const [n, p] of [['rr', RR_PORT], ['crr', CRR_PORT]] as const) svcs.push({ name: `bench/bench:${n}`, vip, port: p, backends: [{ ip: backend, port: p }] });
    } else {
      svcs.push({ name: `bench/filler-${i}:80`, vip: kpVip('10.200', i), port: 80, backends: fillers.map((ip) => ({ ip, port: 8080 })) });
    }
  }
  const text = kubeProxyRules(svcs);
  return { text, rules: text.split('\n').filter((l) => l.startsWith('-A ')).length, vip, position };
}

export async function lbPhase(lab: string, o: LbOptions): Promise<LbResult> {
  const total = o.services ?? 10_000;
  await labDown(lab);
  // Socket LB on the node's cgroup: client "s" runs in it (its sockets are translated at connect()), client "a" is
  // taken out of it (its packets are translated per packet in cil_from_container), both in the same run.
  await labUp({ name: lab, nodes: 1, socketLb: true });
  try {
    const a = await podAdd(lab, 'a', { node: 'ctr', namespace: 'bench', labels: { app: 'bench-a' } });
    removeNetnsCgroup(a.netns);
    const sk = await podAdd(lab, 's', { node: 'ctr', namespace: 'bench', labels: { app: 'bench-a' } });
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
      const order: Array<[string, string, string]> = [['direct', b.ip, a.netns], ['clusterip-1', vip, a.netns], ['sock-1', vip, sk.netns], ['sock-direct', b.ip, sk.netns]];
      for (const [t, ip, cli] of round % 2 ? order : [...order].reverse()) samples.push(await measureTarget(o, cli, b.netns, ip, t, round));
    }
    const op = new ApiClient(labPaths(lab).operatorSocket, 'operator');
    const agent = new ApiClient(loadLab(lab).nodes[0]!.socket);
    const node = loadLab(lab).nodes[0]!;
    const fillers = await Promise.all(Array.from({ length: FILLER_BACKENDS }, (_, i) => podIp(lab, `filler-${i}`)));
    // The filler services, through the operator as `lab service add` makes them, 16 requests in flight.
    const t0 = Date.now();
    const filler = total - 1;
    const changeAt = Math.min(1000, total);
    await fill(o, op, 0, changeAt - 1);
    await untilServices(agent, changeAt, 0);
    const firstFillMs = Date.now() - t0;
    o.say(`lb: ${changeAt} services in the maps; change latency, ${o.latencySamples ?? 50} samples`);
    const changeMs = await changeLatency(o, op, a.netns, b.netns, o.latencySamples ?? 50);
    const fillStart = Date.now();
    await fill(o, op, changeAt - 1, filler);
    await untilServices(agent, total, changeMs.length);
    const fillS = (Date.now() - fillStart + firstFillMs) / 1000;
    o.say(`lb: ${total} services (${filler} with ${FILLER_BACKENDS} backends) in the maps after ${fillS.toFixed(1)} s`);
    for (let round = 1; round <= o.rounds; round++) {
      const order: Array<[string, string, string]> = [['direct-10k', b.ip, a.netns], ['clusterip-10k', vip, a.netns], ['sock-10k', vip, sk.netns]];
      for (const [t, ip, cli] of round % 2 ? order : [...order].reverse()) samples.push(await measureTarget(o, cli, b.netns, ip, t, round));
    }
    // The baseline: kube-proxy's iptables rules for as many services, in the node's namespace, on addresses
    // Tendril's LB does not hold (its lookup misses, the packet goes to the node's stack and netfilter).
    const ipt = iptablesBaseline(total, fillers, b.ip);
    // The legacy backend when installed: iptables-nft's restore of ~140k rules takes minutes on a loaded machine.
    const legacy = run(['iptables-legacy', '--version'], { allowFail: true }).status === 0;
    const iptables = legacy ? 'iptables-legacy' : 'iptables';
    run(inNs(node.netns, [`${iptables}-restore`, '-w', '--noflush']), { input: ipt.text, timeoutMs: 900_000 });
    const iptablesBackend = run([iptables, '--version']).stdout.trim();
    o.say(`lb: kube-proxy iptables baseline: ${ipt.rules} nat + filter rules for ${total} services (${iptablesBackend}); bench VIP ${ipt.vip} at position ${ipt.position}`);
    try {
      for (let round = 1; round <= o.rounds; round++) {
        const order: Array<[string, string, string]> = [['iptables-10k', ipt.vip, a.netns], ['clusterip-10k-b', vip, a.netns], ['sock-10k-b', vip, sk.netns]];
        for (const [t, ip, cli] of round % 2 ? order : [...order].reverse()) samples.push(await measureTarget(o, cli, b.netns, ip, t, round));
      }
    } finally {
      run(inNs(node.netns, [iptables, '-w', '-t', 'nat', '-F']), { allowFail: true });
      run(inNs(node.netns, [iptables, '-w', '-t', 'filter', '-F']), { allowFail: true });
    }
    return { samples, services: total, fillS, changeMs, changeAt, iptablesRules: ipt.rules, iptablesBackend };
  } finally {
    await labDown(lab);
  }
}

/** The phase's report section: medians per target and the ratios the issue sets (≥ 0.97×). */
export function lbReport(r: LbResult, o: { secs: number; rounds: number }): string[] {
  const med = (t: string, k: 'rrTps' | 'crrTps' | 'rrP50us'): number => median(r.samples.filter((s) => s.target === t).map((s) => s[k]));
  const row = (t: string, what: string): string => `| ${what} | ${med(t, 'rrTps').toFixed(0)} | ${med(t, 'rrP50us').toFixed(1)} | ${med(t, 'crrTps').toFixed(0)} |`;
  const ratio = (a: string, b: string, k: 'rrTps' | 'crrTps'): string => (med(a, k) / med(b, k)).toFixed(3);
  const pct = (q: number): string => (r.changeMs.length ? percentile(r.changeMs, q).toFixed(0) : 'n/a');
  return [
    `## Services: pod -> ClusterIP vs pod -> backend IP, same node (medians of ${o.rounds} round(s); 1-byte TCP_RR and TCP_CRR ${o.secs} s each, interleaved)`,
    '',
    '| target | TCP_RR /s | RR p50 µs | TCP_CRR /s |',
    '|---|---:|---:|---:|',
    row('direct', 'backend IP (1 service in the maps)'),
    row('clusterip-1', 'ClusterIP, 1 service'),
    row('direct-10k', `backend IP (${r.services} services in the maps)`),
    row('clusterip-10k', `ClusterIP, ${r.services} services`),
    row('sock-direct', 'socket LB client -> backend IP (hook misses), 1 service'),
    row('sock-1', 'ClusterIP via socket LB, 1 service'),
    row('sock-10k', `ClusterIP via socket LB, ${r.services} services`),
    '',
    `- ClusterIP / backend IP, 1 service: TCP_RR ${ratio('clusterip-1', 'direct', 'rrTps')}×, TCP_CRR ${ratio('clusterip-1', 'direct', 'crrTps')}× (target ≥ 0.97×)`,
    `- ClusterIP / backend IP, ${r.services} services: TCP_RR ${ratio('clusterip-10k', 'direct-10k', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k', 'direct-10k', 'crrTps')}×`,
    `- ClusterIP ${r.services} services / 1 service: TCP_RR ${ratio('clusterip-10k', 'clusterip-1', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k', 'clusterip-1', 'crrTps')}× (target ≥ 0.97×)`,
    `- ${r.services - 1} filler services (${FILLER_BACKENDS} backends each) created through the operator API and in the agent's maps in ${r.fillS.toFixed(1)} s`,
    `- socket LB / per-packet, ClusterIP, 1 service: TCP_RR ${ratio('sock-1', 'clusterip-1', 'rrTps')}×, TCP_CRR ${ratio('sock-1', 'clusterip-1', 'crrTps')}×; socket LB / backend IP: TCP_RR ${ratio('sock-1', 'direct', 'rrTps')}×, TCP_CRR ${ratio('sock-1', 'direct', 'crrTps')}×`,
    `- socket LB ${r.services} services / 1 service: TCP_RR ${ratio('sock-10k', 'sock-1', 'rrTps')}×, TCP_CRR ${ratio('sock-10k', 'sock-1', 'crrTps')}×; socket LB / backend IP, ${r.services} services: TCP_RR ${ratio('sock-10k', 'direct-10k', 'rrTps')}×, TCP_CRR ${ratio('sock-10k', 'direct-10k', 'crrTps')}×`,
    '- per-packet: translation in cil_from_container (tc) for a client outside the node cgroup; socket LB: bpf/sock.c on the lab node\'s cgroup (cgroup/connect4), the client pod in a child of it.',
    '',
    `## Services: Tendril vs kube-proxy iptables, ${r.services} services (medians of ${o.rounds} round(s), interleaved)`,
    '',
    '| target | TCP_RR /s | RR p50 µs | TCP_CRR /s |',
    '|---|---:|---:|---:|',
    row('clusterip-10k-b', `Tendril ClusterIP, ${r.services} services`),
    row('sock-10k-b', `Tendril ClusterIP via socket LB, ${r.services} services`),
    row('iptables-10k', `kube-proxy iptables, ${r.services} services (${r.iptablesRules} nat + filter rules)`),
    '',
    `- Tendril / iptables: TCP_RR ${ratio('clusterip-10k-b', 'iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k-b', 'iptables-10k', 'crrTps')}× (target TCP_CRR ≥ 2×)`,
    `- Tendril socket LB / iptables: TCP_RR ${ratio('sock-10k-b', 'iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('sock-10k-b', 'iptables-10k', 'crrTps')}× (target TCP_CRR ≥ 2×)`,
    `- baseline: kube-proxy's rule shape (KUBE-SERVICES -> KUBE-SVC per service port -> statistic random -> KUBE-SEP DNAT, --masquerade-all; KUBE-NODEPORTS last; filter-table hooks and KUBE-FORWARD), ${r.iptablesBackend}, loaded with iptables-restore in the lab node's namespace on addresses Tendril's LB does not hold; the bench service's rule in the middle of KUBE-SERVICES`,
    '',
    `## Services: change latency with ${r.changeAt} services (${r.changeMs.length} samples)`,
    '',
    `- new service's PUT to the operator returned -> first connection from a pod through its ClusterIP: p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms (target p99 ≤ 100 ms); 10 ms probe resolution`,
    '',
  ];
}
