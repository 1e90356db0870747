// Phase "policy": same-node forwarding with 0 vs 10,000 policy entries on the server endpoint, and the time from a
// policy change to its enforcement on a standalone agent with 1,000 endpoints.
import type { EndpointPolicyView } from '../src/agent/index.js';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { BPF_LAB_ROOT, CLI_JS, labPaths } from '../src/lab/paths.js';
import { checkConnectivity, iperf, rr, rrSummary } from './load.js';
import { measure, type NoisePolicy } from './measure.js';
import type { BenchNetns } from './netns.js';
import { BenchError, inNs, kill, run, sleep, start, type Started } from './proc.js';
import { POLICY_10K, POLICY_NONE, type ChangeLatency, type DpSample, type Measured } from './report.js';
import type { Pair } from './scenarios.js';

export interface PolicyOptions {
  secs: number;
  rounds: number;
  /** Endpoints of the standalone agent (1,000: the issue's node). */
  endpoints: number;
  /** Measured changes of each kind (after WARMUP_CHANGES unmeasured ones). */
  changes: number;
  noise: NoisePolicy;
  nets: BenchNetns;
  tmpDir: string;
  toolsDir: string;
  say: (line: string) => void;
}

export interface PolicyResult {
  samples: DpSample[];
  /** Entries the server endpoint's map held with the big policy (verified before every measured round). */
  entries: number;
  /** Agent's regeneration ms when the big policy was imported, per round. */
  importMs: number[];
  /** Packets the allow entry of the client's identity counted over the rounds with the policy. */
  allowedPackets: number;
  latency: ChangeLatency[];
  /** Creating the standalone node's endpoints (IPAM + PUT /v1/endpoint each), wall seconds. */
  setupS: number;
}

// ---------------------------------------------------------------- pure: policies and the endpoint plan

/** Ports of the big policy: every other port, so that no two are adjacent and none merge into a range block. */
export const BIG_FIRST_PORT = 10_000;
export const BIG_PORTS = 10_000;
/** Changes made before measuring (the first one creates the policy, and the agent's JIT warms up). */
export const WARMUP_CHANGES = 2;
/** Labels of the standalone node's endpoints are spread over this many apps. */
export const LATENCY_APPS = 50;
export const LATENCY_NAMESPACE = 'bench';
/** The one endpoint the single-endpoint change selects (a label no other endpoint has). */
export const SINGLE_LABEL = { 'bench-single': 'yes' } as const;
/** IDs of the standalone node's endpoints: clear of the health endpoint's (the agent numbers from 1). */
export const FIRST_ENDPOINT_ID = 1000;
/** Requests in flight while the endpoints are created. */
const CREATE_CONCURRENCY = 8;

export interface TendrilPolicyDoc {
  apiVersion: 'tendril.io/v2';
  kind: 'TendrilNetworkPolicy';
  metadata: { name: string; namespace: string };
  spec: {
    endpointSelector: { matchLabels?: Record<string, string> };
    ingress: Array<Record<string, unknown>>;
  };
}

/** `count` single ports from `first`, every other one; throws when they do not fit below 65536. */
export function spreadPorts(count: number, first: number): number[] {
  const last = first + 2 * (count - 1);
  if (!Number.isInteger(count) || count < 1 || first < 1 || last > 65535) throw new RangeError(`Cannot spread ${count} ports from ${first}: the last would be ${last}`);
  return Array.from({ length: count }, (_, i) => first + 2 * i);
}

/**
 * The policy of the throughput test: selects the server; allows the client (every protocol and port) and, from
 * `world`, `ports` distinct single TCP ports — each one map entry, so the endpoint holds ports + 1 entries.
 */
export function bigPolicy(o: { name: string; namespace: string; serverApp: string; clientApp: string; ports: readonly number[] }): TendrilPolicyDoc {
  return {
    apiVersion: 'tendril.io/v2',
    kind: 'TendrilNetworkPolicy',
    metadata: { name: o.name, namespace: o.namespace },
    spec: {
      endpointSelector: { matchLabels: { app: o.serverApp } },
      ingress: [
        { fromEndpoints: [{ matchLabels: { app: o.clientApp } }] },
        { fromEntities: ['world'], toPorts: [{ ports: o.ports.map((p) => ({ port: String(p), protocol: 'TCP' })) }] },
      ],
    },
  };
}

/** A policy allowing one TCP port from `world` to the endpoints `matchLabels` selects (none given: every endpoint). */
export function portPolicy(name: string, namespace: string, matchLabels: Record<string, string> | undefined, port: number): TendrilPolicyDoc {
  return {
    apiVersion: 'tendril.io/v2',
    kind: 'TendrilNetworkPolicy',
    metadata: { name, namespace },
    spec: {
      endpointSelector: matchLabels ? { matchLabels: { ...matchLabels } } : {},
      ingress: [{ fromEntities: ['world'], toPorts: [{ ports: [{ port: String(port), protocol: 'TCP' }] }] }],
    },
  };
}

export interface PlannedEndpoint {
  id: number;
  /** Host end of the veth (the agent attaches there) and its peer; both stay in the node's namespace. */
  hostIf: string;
  peerIf: string;
  hostMac: string;
  podMac: string;
  podName: string;
  labels: Record<string, string>;
}

function mac(kind: number, i: number): string {
  const b = [0x02, kind, 0, (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** `n` endpoints with labels app=app-<i mod apps>; the first also carries SINGLE_LABEL. */
export function endpointPlan(n: number, apps: number): PlannedEndpoint[] {
  if (!Number.isInteger(n) || n < 1 || FIRST_ENDPOINT_ID + n - 1 > 4095) throw new RangeError(`Cannot plan ${n} endpoints: IDs ${FIRST_ENDPOINT_ID}.. must stay <= 4095`);
  return Array.from({ length: n }, (_, i) => ({
    id: FIRST_ENDPOINT_ID + i,
    hostIf: `tdh${i}`,
    peerIf: `tdp${i}`,
    hostMac: mac(0xb0, i),
    podMac: mac(0xb1, i),
    podName: `ep-${i}`,
    labels: { app: `app-${i % apps}`, ...(i === 0 ? SINGLE_LABEL : {}) },
  }));
}

/** `ip -batch` input creating every planned veth pair (both ends in one namespace, up). */
export function vethBatch(plan: readonly PlannedEndpoint[]): string {
  return plan
    .map((e) => `link add ${e.hostIf} address ${e.hostMac} type veth peer name ${e.peerIf} address ${e.podMac}\nlink set ${e.hostIf} up\nlink set ${e.peerIf} up\n`)
    .join('');
}

/** Body of PUT /v1/endpoint/<id> (the agent's EndpointChangeRequest). */
export function endpointRequest(e: PlannedEndpoint, ip: string, namespace: string): Record<string, unknown> {
  return {
    addressing: { ipv4: ip },
    'interface-name': e.hostIf,
    'host-mac': e.hostMac,
    mac: e.podMac,
    'container-id': randomBytes(32).toString('hex'),
    labels: e.labels,
    'k8s-namespace': namespace,
    'k8s-pod-name': e.podName,
  };
}

// ---------------------------------------------------------------- agent API

interface ImportResponse {
  imported: string[];
  regeneration: { endpoints: number; ms: number };
}


async function importPolicy(c: ApiClient, doc: TendrilPolicyDoc): Promise<ImportResponse> {
  return c.request<ImportResponse>('PUT', '/v1/policy', { text: JSON.stringify(doc), origin: 'bench' });
}

async function deletePolicy(c: ApiClient, key: string): Promise<void> {
  await c.request('DELETE', `/v1/policy/${encodeURIComponent(key)}`);
}

async function endpointPolicy(c: ApiClient, ref: string): Promise<EndpointPolicyView> {
  return c.get<EndpointPolicyView>(`/v1/endpoint/${encodeURIComponent(ref)}/policy`);
}

// ---------------------------------------------------------------- 1. forwarding with 0 vs 10,000 entries

const CLIENT_APP = 'bench-a';
const SERVER_APP = 'bench-b';

/** Packets counted by the server's ingress entries for the client's identity. */
function clientPackets(v: EndpointPolicyView): number {
  return v.entries.filter((e) => e.direction === 'ingress' && e.labels.some((l) => l.endsWith(`app=${CLIENT_APP}`))).reduce((a, e) => a + e.packets, 0);
}

/**
 * Interleaved rounds on the lab pair (every other round with the policy first); the big policy is imported
 * before its tests and deleted after them, and the server's map is checked each time.
 */
async function throughput(lab: string, p: Pair, o: PolicyOptions): Promise<Omit<PolicyResult, 'latency' | 'setupS'>> {
  const c = new ApiClient(labPaths(lab).node('ctr').socket);
  const server = `ipv4:${p.serverIp}`;
  const doc = bigPolicy({ name: 'bench-10k', namespace: 'default', serverApp: SERVER_APP, clientApp: CLIENT_APP, ports: spreadPorts(BIG_PORTS, BIG_FIRST_PORT) });
  const rrBin = path.join(o.toolsDir, 'rr');
  const samples: DpSample[] = [];
  const importMs: number[] = [];
  let entries = 0;
  let allowedPackets = 0;
  let key: string | undefined;
  try {
    for (let round = 1; round <= o.rounds; round++) {
      const order = round % 2 ? [false, true] : [true, false];
      for (const on of order) {
        if (on) {
          const r = await importPolicy(c, doc);
          key = r.imported[0];
          importMs.push(r.regeneration.ms);
          const v = await endpointPolicy(c, server);
          entries = v.entries.length;
          if (!v.ingress || entries < BIG_PORTS) {
            throw new BenchError(`Policy bench-10k is not in force on ${p.serverIp}: ingress ${v.ingress ? 'enforced' : 'not enforced'}, ${entries} entries (expected >= ${BIG_PORTS})`);
          }
          checkConnectivity(p.client, p.serverIp, POLICY_10K);
        } else {
          const v = await endpointPolicy(c, server);
          if (v.ingress || v.entries.length) throw new BenchError(`Endpoint ${p.serverIp} still has ${v.entries.length} policy entries without a policy`);
        }
        const before = on ? clientPackets(await endpointPolicy(c, server)) : 0;
        const m = <T>(fn: () => Promise<T>) => measure(o.noise, fn);
        const gbps = await m(() => iperf(p.server, p.client, p.serverIp, o.secs));
        const rrX = await m(async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs)));
        const rr1 = await m(async () => rrSummary(await rr(rrBin, p.server, p.client, p.serverIp, o.secs, true)));
        const scenario = on ? POLICY_10K : POLICY_NONE;
        samples.push({ round, scenario, gbps, rr: rrX, rr1 });
        let counted = '';
        if (on) {
          const n = clientPackets(await endpointPolicy(c, server)) - before;
          allowedPackets += n;
          counted = `  ${n} packets on the allow entry of app=${CLIENT_APP}`;
          await deletePolicy(c, key!);
          key = undefined;
        }
        const f = (x: Measured<unknown>) => `${x.foreignPct.toFixed(0)}%${x.attempts > 1 ? ` x${x.attempts}` : ''}`;
        o.say(
          `policy round ${round} ${scenario.padEnd(18)} ${gbps.value.toFixed(2)} Gbit/s (${f(gbps)})  rr ${rrX.value.tps.toFixed(0)}/s (${f(rrX)})  ` +
            `rr 1-CPU ${rr1.value.tps.toFixed(0)}/s (${f(rr1)})${counted}  [foreign load %, attempts]`,
        );
      }
    }
  } finally {
    // The lab serves the CNI phase next: leave it without the policy, also after a failure.
    if (key) await deletePolicy(c, key).catch(() => {});
  }
  return { samples, entries, importMs, allowedPackets };
}

// ---------------------------------------------------------------- 2. change-to-enforcement with 1,000 endpoints

/** bpffs directory of the standalone agent of run `pid` (cleanup removes it). */
export function policyBpfRoot(pid: number): string {
  return path.join(BPF_LAB_ROOT, `bench-${pid}`);
}

const NODE_IP = '192.168.79.1';
const POD_CIDR = '10.250.0.0/21';

interface StandaloneAgent {
  proc: Started;
  client: ApiClient;
  log: string;
  node: string;
  healthNs: string;
  bpfRoot: string;
}

function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/**
 * An agent in a bench namespace of its own (eth0 with the node IP, no store: identities in memory). eth0 is one end
 * of a veth pair whose peer stays in the same namespace: this kernel has no dummy devices, and nothing crosses it.
 */
async function startAgent(o: PolicyOptions): Promise<StandaloneAgent> {
  const node = o.nets.add('pnode');
  run(['ip', '-n', node, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0peer']);
  run(['ip', '-n', node, 'link', 'set', 'eth0peer', 'up']);
  run(['ip', '-n', node, 'addr', 'add', `${NODE_IP}/24`, 'dev', 'eth0']);
  run(['ip', '-n', node, 'link', 'set', 'eth0', 'up']);
  const dir = path.join(o.tmpDir, 'policy-agent');
  fs.mkdirSync(dir, { recursive: true });
  const socket = path.join(dir, 'tendril.sock');
  const log = path.join(dir, 'agent.log');
  const bpfRoot = policyBpfRoot(process.pid);
  const healthNs = o.nets.name('phealth');
  const proc = start(
    inNs(node, [
      process.execPath, CLI_JS, 'agent',
      '--node-name', 'bench',
      '--pod-cidr', POD_CIDR,
      '--node-ip', NODE_IP,
      '--native-dev', 'eth0',
      '--attach-mode', 'tc',
      '--state-dir', path.join(dir, 'state'),
      '--socket', socket,
      '--bpf-root', bpfRoot,
      '--cni-conf-dir', path.join(dir, 'net.d'),
      '--health-netns', healthNs,
      '--log-file', log,
    ]),
  );
  let exited = false;
  void proc.exited.then(() => (exited = true));
  const client = new ApiClient(socket);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new BenchError(`The policy bench agent exited during start-up: ${(await proc.exited).stderr.trim()}\n${tail(log, 15)}`);
    try {
      const cfg = await client.get<{ ready?: boolean }>('/v1/config');
      if (cfg.ready) return { proc, client, log, node, healthNs, bpfRoot };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new BenchError(`The policy bench agent is not ready after 30 s:\n${tail(log, 15)}`);
    await sleep(100);
  }
}

/** SIGTERM (the agent closes its API and maps), SIGKILL after 10 s; then its namespaces and pins go. */
async function stopAgent(a: StandaloneAgent, nets: BenchNetns): Promise<void> {
  kill(a.proc.pid, 'SIGTERM');
  const timer = setTimeout(() => kill(a.proc.pid), 10_000);
  await a.proc.exited;
  clearTimeout(timer);
  nets.delMany([a.node, a.healthNs]);
  removeBpfRoot(a.bpfRoot);
}

/** Removes the standalone agent's pins; only ever a bench directory under the Tendril bpffs root. */
export function removeBpfRoot(dir: string): void {
  if (!/^\/sys\/fs\/bpf\/tendril\/bench-\d+$/.test(dir)) throw new BenchError(`Refusing to remove "${dir}": not a bench bpffs directory`);
  fs.rmSync(dir, { recursive: true, force: true });
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}

/** Veth pairs in one batch, then per endpoint an address from the agent's IPAM and PUT /v1/endpoint. */
async function createEndpoints(a: StandaloneAgent, plan: readonly PlannedEndpoint[]): Promise<void> {
  run(['ip', '-n', a.node, '-batch', '-'], { input: vethBatch(plan), timeoutMs: 300_000 });
  await pool(plan, CREATE_CONCURRENCY, async (e) => {
    const r = await a.client.request<{ ipv4: { ip: string } }>('POST', `/v1/ipam?owner=${encodeURIComponent(`${LATENCY_NAMESPACE}/${e.podName}`)}`);
    await a.client.request('PUT', `/v1/endpoint/${e.id}`, endpointRequest(e, r.ipv4.ip, LATENCY_NAMESPACE));
  });
}

interface ChangeKind {
  change: string;
  name: string;
  selector: Record<string, string> | undefined;
  firstPort: number;
  /** Endpoints the agent must report as recompiled. */
  affected: number;
  /** Endpoints whose map is checked for the new port after each change. */
  check: readonly PlannedEndpoint[];
}

/**
 * Every change replaces one policy with the same one allowing another port; the agent answers after the maps are
 * updated, so the round trip is the time to enforcement. After each, a selected endpoint's map must hold the port.
 */
async function changes(a: StandaloneAgent, plan: readonly PlannedEndpoint[], o: PolicyOptions): Promise<ChangeLatency[]> {
  const kinds: ChangeKind[] = [
    { change: 'allowed port of a policy selecting every endpoint', name: 'bench-all', selector: undefined, firstPort: 20_000, affected: plan.length, check: plan },
    { change: 'allowed port of a policy selecting one endpoint', name: 'bench-one', selector: { ...SINGLE_LABEL }, firstPort: 30_000, affected: 1, check: plan.slice(0, 1) },
  ];
  const out = kinds.map((k) => ({ change: k.change, endpoints: plan.length, affected: k.affected, ms: [] as number[], regenMs: [] as number[] }));
  const keys = new Set<string>();
  try {
    for (let i = -WARMUP_CHANGES; i < o.changes; i++) {
      // Alternated, so that neither kind always runs right after the other's regeneration.
      const order = (i & 1) === 0 ? [0, 1] : [1, 0];
      for (const ki of order) {
        const k = kinds[ki]!;
        const port = k.firstPort + WARMUP_CHANGES + i;
        const t0 = performance.now();
        const r = await importPolicy(a.client, portPolicy(k.name, LATENCY_NAMESPACE, k.selector, port));
        const ms = performance.now() - t0;
        r.imported.forEach((x) => keys.add(x));
        if (r.regeneration.endpoints !== k.affected) {
          throw new BenchError(`Policy ${k.name} recompiled ${r.regeneration.endpoints} endpoints, expected ${k.affected}`);
        }
        const probe = k.check[Math.floor(Math.random() * k.check.length)]!;
        const v = await endpointPolicy(a.client, String(probe.id));
        if (!v.entries.some((e) => e.direction === 'ingress' && e.protocol === 6 && e.port === port && e.portPrefixLen === 16)) {
          throw new BenchError(`Endpoint ${probe.id} has no entry for port ${port} after policy ${k.name} was accepted`);
        }
        if (i >= 0) {
          out[ki]!.ms.push(ms);
          out[ki]!.regenMs.push(r.regeneration.ms);
        }
      }
    }
  } finally {
    for (const key of keys) await deletePolicy(a.client, key).catch(() => {});
  }
  return out;
}

async function latency(o: PolicyOptions): Promise<{ latency: ChangeLatency[]; setupS: number }> {
  o.say(`policy: standalone agent in ${o.nets.name('pnode')} (pod CIDR ${POD_CIDR}, tc attach), ${o.endpoints} endpoints`);
  const a = await startAgent(o);
  try {
    const plan = endpointPlan(o.endpoints, LATENCY_APPS);
    const t0 = performance.now();
    await createEndpoints(a, plan);
    const setupS = (performance.now() - t0) / 1000;
    o.say(`policy: ${plan.length} endpoints created in ${setupS.toFixed(1)} s; ${WARMUP_CHANGES} + ${o.changes} changes of each kind`);
    const lat = await changes(a, plan, o);
    for (const l of lat) {
      const sorted = [...l.ms].sort((x, y) => x - y);
      o.say(`policy: ${l.change}: ${l.affected} endpoints, median ${sorted[sorted.length >> 1]?.toFixed(2)} ms, max ${sorted[sorted.length - 1]?.toFixed(2)} ms`);
    }
    return { latency: lat, setupS };
  } catch (err) {
    throw new BenchError(`${(err as Error).message}\nagent log (last lines):\n${tail(a.log, 10)}`, { cause: err });
  } finally {
    await stopAgent(a, o.nets);
  }
}

export async function policyPhase(lab: string, p: Pair, o: PolicyOptions): Promise<PolicyResult> {
  const t = await throughput(lab, p, o);
  const l = await latency(o);
  return { ...t, ...l };
}
