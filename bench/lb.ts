// Phase "lb": same-node TCP_RR and TCP_CRR pod -> ClusterIP vs pod -> the backend's IP, with 1 and with 10,000
// services (4 backends each) in the node's service maps: the per-packet translation's cost, and that a lookup does
// not grow with the number of services.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd, type LabPod } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { removeNetnsCgroup } from '../src/lab/cgroups.js';
import { labServiceAdd } from '../src/lab/services.js';
import type { ServiceListEntry } from '../src/lb/index.js';
import { crr, rr } from './load.js';
import { KP_SYSCTLS, kpVip, kubeProxyRules, restoreChunks, type KpMasquerade, type KpService } from './kube-proxy.js';
import { BenchNetns } from './netns.js';
import { execRefPlugin, refPluginConfig } from './scenarios.js';
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
  /** iptables rules the kube-proxy baseline loaded (nat + filter tables). */
  iptablesRules: number;
  iptablesBackend: string;
  /** Seconds iptables-restore took to load the baseline's rules (in pieces), per baseline node. */
  iptablesLoadS?: number[];
  /** The agent's CPU (share of one CPU) while the 1-service and the 10,000-service rounds ran: is it still busy? */
  agentCpu1?: number;
  agentCpu10k?: number;
}

/** utime + stime of a process in clock ticks (100/s), and when they were read. */
function cpuTicks(pid: number): { ticks: number; at: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { ticks: Number(f[11]) + Number(f[12]), at: Date.now() };
}

function cpuShare(a: { ticks: number; at: number }, b: { ticks: number; at: number }): number {
  return (b.ticks - a.ticks) / 100 / ((b.at - a.at) / 1000);
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

/**
 * kube-proxy's rules for `total` services: fillers to the filler pods, the bench service (rr and crr ports) to b in
 * the middle of KUBE-SERVICES (kube-proxy writes it in Go map order: a service's expected place is the middle).
 */
export function iptablesBaseline(total: number, fillers: string[], backend: string, masquerade: KpMasquerade = 'all', base = '10.200'): { text: string; rules: number; vip: string; position: number } {
  const position = Math.floor(total / 2);
  const svcs: KpService[] = [];
  let vip = '';
  for (let i = 0; i < total; i++) {
    if (i === position) {
      vip = kpVip(base, i);
      for (const [n, p] of [['rr', RR_PORT], ['crr', CRR_PORT]] as const) svcs.push({ name: `bench/bench:${n}`, vip, port: p, backends: [{ ip: backend, port: p }] });
    } else {
      svcs.push({ name: `bench/filler-${i}:80`, vip: kpVip(base, i), port: 80, backends: fillers.map((ip) => ({ ip, port: 8080 })) });
    }
  }
  const text = kubeProxyRules(svcs, masquerade);
  return { text, rules: text.split('\n').filter((l) => l.startsWith('-A ')).length, vip, position };
}

/**
 * The iptables kube-proxy 1.32 would use here: its image's iptables-wrapper picks the mode the host's own rules
 * (kubelet's KUBE-IPTABLES-HINT chain) are in, i.e. the host's `iptables`: nf_tables on Debian 12, legacy where
 * that is the system's choice. The binary name, e.g. "iptables-nft".
 */
export function kubeProxyIptables(): string {
  const v = run(['iptables', '--version'], { allowFail: true });
  if (v.status !== 0) throw new Error(`lb: no iptables for the kube-proxy baseline: ${(v.stderr || v.stdout).trim()}`);
  return /nf_tables/.test(v.stdout) ? 'iptables-nft' : 'iptables-legacy';
}

/** Loads `text` into `ns` with `bin`-restore --noflush, in pieces (restoreChunks); returns the seconds it took. */
function loadRules(ns: string, bin: string, text: string): number {
  const t0 = Date.now();
  for (const piece of restoreChunks(text)) run(inNs(ns, [`${bin}-restore`, '-w', '--noflush']), { input: piece, timeoutMs: 900_000 });
  return (Date.now() - t0) / 1000;
}

function flushRules(ns: string, bin: string): void {
  for (const t of ['nat', 'filter']) {
    run(inNs(ns, [bin, '-w', '-t', t, '-F']), { allowFail: true });
    run(inNs(ns, [bin, '-w', '-t', t, '-X']), { allowFail: true });
  }
}

/** The cluster CIDR of the kube-proxy + ptp baseline node (pods and the fillers' never-used backend addresses). */
const KP_CIDR = '10.213.0.0/24';

/**
 * A node as kube-proxy clusters run it: two pods wired by the reference ptp plugin (routed /32 veths through the
 * node namespace's stack and conntrack, no BPF), kube-proxy's conntrack sysctls. remove() deletes it all.
 */
function setupKpNode(): { node: string; client: string; server: string; serverIp: string; remove: () => void } {
  const nets = new BenchNetns(`tdlb-${process.pid}-`);
  const names = ['kp-node', 'kp-a', 'kp-b'];
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-lb-kp-'));
  const remove = (): void => {
    nets.delMany(names.map((n) => nets.name(n)));
    fs.rmSync(tmp, { recursive: true, force: true });
  };
  try {
    const node = nets.add('kp-node');
    const pods = [nets.add('kp-a'), nets.add('kp-b')];
    const conf = refPluginConfig('ptp', 'tdlb-kp', KP_CIDR, tmp);
    const ips = pods.map((p) => {
      const out = execRefPlugin(node, 'ptp', 'ADD', randomBytes(16).toString('hex'), p, conf);
      const ip = (JSON.parse(out) as { ips?: Array<{ address: string; gateway?: string }> }).ips?.[0];
      if (!ip?.gateway) throw new Error(`lb: ptp ADD for ${p} returned no IP and gateway: ${out}`);
      // A pod's default route (the config has no IPAM routes): service addresses are outside its subnet.
      run(['ip', '-n', p, 'route', 'replace', 'default', 'via', ip.gateway, 'dev', 'eth0']);
      return ip.address.split('/')[0]!;
    });
    run(inNs(node, ['sysctl', '-qw', ...KP_SYSCTLS]));
    return { node, client: pods[0]!, server: pods[1]!, serverIp: ips[1]!, remove };
  } catch (err) {
    remove();
    throw err;
  }
}

/** A 1-node lab as the bench uses it: clients a (per packet) and s (socket LB), server b, the filler pods, the bench service. */
async function benchLab(lab: string): Promise<{ a: LabPod; sk: LabPod; b: LabPod; vip: string }> {
  await labDown(lab);
  // Socket LB on the node's cgroup: client "s" runs in it (its sockets are translated at connect()), client "a" is
  // taken out of it (its packets are translated per packet in cil_from_container), both in the same run.
  await labUp({ name: lab, nodes: 1, socketLb: true });
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
  return { a, sk, b, vip: svc.clusterIP! };
}

export async function lbPhase(lab: string, o: LbOptions): Promise<LbResult> {
  const total = o.services ?? 10_000;
  // Two labs alive at once, built alike (same pods, same placement): `lab` gets the filler services, `one` keeps the
  // bench service alone, and the 1-service rounds run on `one` interleaved with the N-service rounds on `lab`, so the
  // machine's drift over the fill does not land in the N / 1 ratio.
  const one = `${lab}1`;
  try {
    const { a, sk, b, vip } = await benchLab(lab);
    const twin = await benchLab(one);
    const samples: LbSample[] = [];
    const agentPid = loadLab(lab).nodes[0]!.pid;
    const twinPid = loadLab(one).nodes[0]!.pid;
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
    const cpu10k = cpuTicks(agentPid);
    const cpu1 = cpuTicks(twinPid);
    for (let round = 1; round <= o.rounds; round++) {
      // By turns: a target of the N-service lab, then its twin on the 1-service lab, ...
      const order: Array<[string, string, string, string]> = [
        ['direct-10k', b.ip, a.netns, b.netns],
        ['direct', twin.b.ip, twin.a.netns, twin.b.netns],
        ['clusterip-10k', vip, a.netns, b.netns],
        ['clusterip-1', twin.vip, twin.a.netns, twin.b.netns],
        ['sock-10k', vip, sk.netns, b.netns],
        ['sock-1', twin.vip, twin.sk.netns, twin.b.netns],
        ['sock-direct', twin.b.ip, twin.sk.netns, twin.b.netns],
      ];
      for (const [t, ip, cli, srv] of round % 2 ? order : [...order].reverse()) samples.push(await measureTarget(o, cli, srv, ip, t, round));
    }
    const agentCpu10k = cpuShare(cpu10k, cpuTicks(agentPid));
    const agentCpu1 = cpuShare(cpu1, cpuTicks(twinPid));
    // The twin's part is done: its agent and pods leave the machine to the baselines.
    await labDown(one);
    // The baselines: kube-proxy's iptables rules for as many services, with the iptables kube-proxy would pick here.
    // (1) kube-proxy as its clusters run: a node with two ptp pods, its default masquerading (sources outside the
    // cluster CIDR only), its conntrack settings. (2) The same rules in front of Tendril's datapath, in the lab node's
    // namespace on addresses Tendril's LB does not hold (its lookup misses, the packet goes to the stack and
    // netfilter); with --masquerade-all, since a same-node backend's reply is otherwise delivered by Tendril's BPF
    // and never meets the node's conntrack to be un-DNATed.
    const iptables = kubeProxyIptables();
    const iptablesBackend = run([iptables, '--version']).stdout.trim();
    const kp = setupKpNode();
    const kpFillers = [200, 201, 202, 203].map((h) => KP_CIDR.replace(/\.0\/24$/, `.${h}`));
    const kpRules = iptablesBaseline(total, kpFillers, kp.serverIp, { clusterCidr: KP_CIDR }, '10.201');
    const ipt = iptablesBaseline(total, fillers, b.ip);
    const iptablesLoadS: number[] = [];
    try {
      iptablesLoadS.push(loadRules(kp.node, iptables, kpRules.text));
      iptablesLoadS.push(loadRules(node.netns, iptables, ipt.text));
      run(inNs(node.netns, ['sysctl', '-qw', ...KP_SYSCTLS]));
      o.say(`lb: kube-proxy iptables baselines: ${ipt.rules} nat + filter rules for ${total} services (${iptablesBackend}, loaded in ${iptablesLoadS.map((x) => x.toFixed(0)).join(' s, ')} s); bench VIP at position ${ipt.position} (${kpRules.vip} on the ptp node, ${ipt.vip} on Tendril's)`);
      for (let round = 1; round <= o.rounds; round++) {
        const order: Array<[string, string, string, string]> = [
          ['kp-iptables-10k', kpRules.vip, kp.client, kp.server],
          ['clusterip-10k-b', vip, a.netns, b.netns],
          ['sock-10k-b', vip, sk.netns, b.netns],
          ['iptables-10k', ipt.vip, a.netns, b.netns],
          ['kp-direct-10k', kp.serverIp, kp.client, kp.server],
        ];
        for (const [t, ip, cli, srv] of round % 2 ? order : [...order].reverse()) samples.push(await measureTarget(o, cli, srv, ip, t, round));
      }
    } finally {
      flushRules(node.netns, iptables);
      kp.remove();
    }
    return { samples, services: total, fillS, changeMs, changeAt, iptablesRules: ipt.rules, iptablesBackend, iptablesLoadS, agentCpu1, agentCpu10k };
  } finally {
    await labDown(one).catch(() => undefined);
    await labDown(lab);
  }
}

/** The phase's report section: medians per target and the ratios the issue sets (≥ 0.97×). */
export function lbReport(r: LbResult, o: { secs: number; rounds: number }): string[] {
  const med = (t: string, k: 'rrTps' | 'crrTps' | 'rrP50us'): number => median(r.samples.filter((s) => s.target === t).map((s) => s[k]));
  const row = (t: string, what: string): string => `| ${what} | ${med(t, 'rrTps').toFixed(0)} | ${med(t, 'rrP50us').toFixed(1)} | ${med(t, 'crrTps').toFixed(0)} |`;
  const ratio = (a: string, b: string, k: 'rrTps' | 'crrTps'): string => (med(a, k) / med(b, k)).toFixed(3);
  const pct = (q: number): string => (r.changeMs.length ? percentile(r.changeMs, q).toFixed(0) : 'n/a');
  const has = (t: string): boolean => r.samples.some((s) => s.target === t);
  return [
    `## Services: pod -> ClusterIP vs pod -> backend IP, same node (medians of ${o.rounds} round(s); 1-byte TCP_RR and TCP_CRR ${o.secs} s each, interleaved; the 1-service targets on a twin lab alive at the same time, by turns with the ${r.services}-service ones)`,
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
    `- backend IP ${r.services} services / 1 service (no translation at all): TCP_RR ${ratio('direct-10k', 'direct', 'rrTps')}×, TCP_CRR ${ratio('direct-10k', 'direct', 'crrTps')}× — a drop here is not the LB's per-packet cost`,
    ...(r.agentCpu1 !== undefined && r.agentCpu10k !== undefined ? [`- agent CPU while the rounds ran: ${(r.agentCpu1 * 100).toFixed(1)} % of a CPU with 1 service, ${(r.agentCpu10k * 100).toFixed(1)} % with ${r.services}`] : []),
    `- ${r.services - 1} filler services (${FILLER_BACKENDS} backends each) created through the operator API and in the agent's maps in ${r.fillS.toFixed(1)} s`,
    `- socket LB / per-packet, ClusterIP, 1 service: TCP_RR ${ratio('sock-1', 'clusterip-1', 'rrTps')}×, TCP_CRR ${ratio('sock-1', 'clusterip-1', 'crrTps')}×; socket LB / backend IP: TCP_RR ${ratio('sock-1', 'direct', 'rrTps')}×, TCP_CRR ${ratio('sock-1', 'direct', 'crrTps')}×`,
    `- socket LB ${r.services} services / 1 service: TCP_RR ${ratio('sock-10k', 'sock-1', 'rrTps')}×, TCP_CRR ${ratio('sock-10k', 'sock-1', 'crrTps')}×; socket LB / backend IP, ${r.services} services: TCP_RR ${ratio('sock-10k', 'direct-10k', 'rrTps')}×, TCP_CRR ${ratio('sock-10k', 'direct-10k', 'crrTps')}×`,
    '- per-packet: translation in cil_from_container (tc) for a client outside the node cgroup; socket LB: bpf/sock.c on the lab node\'s cgroup (cgroup/connect4), the client pod in a child of it. Default: per-packet (socket LB is opt-in, lab up --socket-lb / agent --bpf-lb-sock-cgroup): after connect() its packets carry the backend address (the endpoint program\'s lookup misses instead of translating), and the choice is made once per connection.',
    '',
    `## Services: Tendril vs kube-proxy iptables, ${r.services} services (medians of ${o.rounds} round(s), interleaved)`,
    '',
    '| target | TCP_RR /s | RR p50 µs | TCP_CRR /s |',
    '|---|---:|---:|---:|',
    row('clusterip-10k-b', `Tendril ClusterIP, ${r.services} services`),
    row('sock-10k-b', `Tendril ClusterIP via socket LB, ${r.services} services`),
    ...(has('kp-iptables-10k') ? [row('kp-iptables-10k', `kube-proxy iptables + ptp pods, ${r.services} services (${r.iptablesRules} nat + filter rules)`), row('kp-direct-10k', 'ptp pods, backend IP (the same rules loaded)')] : []),
    row('iptables-10k', `kube-proxy iptables (--masquerade-all) in front of Tendril's datapath, ${r.services} services`),
    '',
    ...(has('kp-iptables-10k')
      ? [
          `- Tendril / kube-proxy + ptp: TCP_RR ${ratio('clusterip-10k-b', 'kp-iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k-b', 'kp-iptables-10k', 'crrTps')}× (target TCP_CRR ≥ 2×); socket LB: TCP_RR ${ratio('sock-10k-b', 'kp-iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('sock-10k-b', 'kp-iptables-10k', 'crrTps')}×`,
          `- kube-proxy + ptp: ClusterIP / backend IP TCP_CRR ${ratio('kp-iptables-10k', 'kp-direct-10k', 'crrTps')}× (what its ${r.services} services cost a new connection)`,
        ]
      : []),
    `- Tendril / iptables in front of Tendril: TCP_RR ${ratio('clusterip-10k-b', 'iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('clusterip-10k-b', 'iptables-10k', 'crrTps')}×; socket LB: TCP_RR ${ratio('sock-10k-b', 'iptables-10k', 'rrTps')}×, TCP_CRR ${ratio('sock-10k-b', 'iptables-10k', 'crrTps')}×`,
    `- baselines: kube-proxy 1.32's rule shape (KUBE-SERVICES -> KUBE-SVC per service port -> statistic random -> KUBE-SEP DNAT; KUBE-MARK-MASQ / KUBE-POSTROUTING MASQUERADE --random-fully; KUBE-NODEPORTS last; the filter table's hooks, KUBE-FORWARD, KUBE-FIREWALL), ${r.iptablesBackend} (the host's iptables, which kube-proxy's iptables-wrapper picks)${r.iptablesLoadS ? `, restored in pieces in ${r.iptablesLoadS.map((x) => x.toFixed(0)).join(' s and ')} s` : ''}; the bench service's rule in the middle of KUBE-SERVICES (kube-proxy writes it in Go map order); kube-proxy's conntrack sysctls (established 24 h, close-wait 1 h). kube-proxy + ptp: its default masquerading (\`! -s <cluster CIDR>\`), replies through the node's conntrack. In front of Tendril: --masquerade-all (else a same-node backend's reply bypasses the node's conntrack)`,
    '',
    `## Services: change latency with ${r.changeAt} services (${r.changeMs.length} samples)`,
    '',
    `- new service's PUT to the operator returned -> first connection from a pod through its ClusterIP: p50 ${pct(0.5)} ms, p99 ${pct(0.99)} ms, max ${pct(1)} ms (target p99 ≤ 100 ms); 10 ms probe resolution`,
    '',
  ];
}
