// Phase "l7": HTTP client -> server on another node (tunnel), with an L7 rule (through the node proxy) vs an
// L4-only allow for the same peer and port, interleaved in the same run: requests/s keep-alive and with one
// connection per request (closed loop, 8 connections), and p50/p99 latency at 1,000 requests/s (open loop).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { labDown, labUp, loadLab, podAdd, type LabPod } from '../src/lab/lab.js';
import { labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import type { LoadResult } from './l7-load.js';
import { CPU_ROLES, cpuSnapshot, perRequest, proxyPidOf, type CpuRole } from './l7-cpu.js';
import { ObserverClient, observerSocketFor } from '../src/observe/index.js';
import { inNs, runAsync, sleep } from './proc.js';
import { median } from './stats.js';

/** A difference with its sign: +0.24, -1.50 (not +-1.50 when L7 happens to beat L4). */
const signed = (ms: number): string => `${ms < 0 ? '-' : '+'}${Math.abs(ms).toFixed(2)}`;

const LOAD_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'l7-load.js');

export interface L7Options {
  secs: number;
  rounds: number;
  say: (line: string) => void;
  /** Connections of the closed-loop tests (default 8). */
  conc?: number;
  /** Offered rate of the latency test (default 1,000/s). */
  rate?: number;
}

export type L7Policy = 'l4' | 'l7';
export type L7Test = 'keepalive' | 'close' | 'rate';

export interface L7Sample {
  policy: L7Policy;
  test: L7Test;
  round: number;
  result: LoadResult;
  /** CPU µs per request of each process on the way (the proxy only with the L7 rule). */
  cpu?: Partial<Record<CpuRole, number>>;
  /** Flows each node's agent made per request (its observer's seen_flows over the run): datapath and L7. */
  flows?: { client?: number | undefined; server?: number | undefined };
}

/** The flows a node's observer has seen so far (undefined if it does not answer). */
async function seenFlows(socket: string): Promise<number | undefined> {
  const c = new ObserverClient(observerSocketFor(socket));
  try {
    return (await c.serverStatus(10_000)).seen_flows;
  } catch {
    return undefined;
  } finally {
    c.close();
  }
}

export const POLICY: Record<L7Policy, string> = {
  l4: `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: bench-web, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEndpoints: [{ matchLabels: { role: client } }]
      toPorts: [{ ports: [{ port: "80", protocol: TCP }] }]
`,
  l7: `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata: { name: bench-web, namespace: default }
spec:
  endpointSelector: { matchLabels: { app: web } }
  ingress:
    - fromEndpoints: [{ matchLabels: { role: client } }]
      toPorts:
        - ports: [{ port: "80", protocol: TCP }]
          rules: { http: [{ method: GET, path: "/public(/.*)?" }] }
`,
};

async function load(netns: string, url: string, test: L7Test, o: L7Options): Promise<LoadResult> {
  const args = ['--url', url, '--mode', test, '--secs', String(o.secs), '--conc', String(o.conc ?? 8), '--rate', String(o.rate ?? 1000)];
  const done = await runAsync(inNs(netns, [process.execPath, LOAD_JS, ...args]), { timeoutMs: (o.secs + 60) * 1000 });
  return JSON.parse(done.stdout.trim().split('\n').pop()!) as LoadResult;
}

export async function status(netns: string, url: string): Promise<number> {
  const r = await runAsync(inNs(netns, ['curl', '-s', '-o', '/dev/null', '--max-time', '2', '-w', '%{http_code}', url]), { timeoutMs: 10_000 }).catch(() => undefined);
  return Number(r?.stdout ?? 0);
}

/**
 * Applies the bench's L4-only or L7 policy (a file in `dir`) and waits until it is in force: /private answers as the
 * policy says (200 with L4 only, 403 from the proxy with L7). Returns the applied resources.
 */
export async function applyPolicy(lab: string, dir: string, policy: L7Policy, clientNetns: string, webIp: string, who: string): Promise<string[]> {
  const file = path.join(dir, `${policy}.yaml`);
  fs.writeFileSync(file, POLICY[policy]);
  const applied = (await labPolicyApply(lab, [file])).map((a) => a.resource);
  const want = policy === 'l4' ? 200 : 403;
  const until = Date.now() + 60_000;
  while ((await status(clientNetns, `http://${webIp}/private`)) !== want) {
    if (Date.now() > until) throw new Error(`${who}: the ${policy} policy not in force within 60 s`);
    await sleep(200);
  }
  return applied;
}

/** The L7 benches' lab (2 nodes, tunnel; `lab` removed first): server pod `web` on the second node, `client` on the first. */
export async function l7Lab(lab: string): Promise<{ nodes: string[]; web: LabPod; client: LabPod }> {
  await labDown(lab);
  await labUp({ name: lab, nodes: 2, routing: 'tunnel' });
  const nodes = loadLab(lab).nodes.map((n) => n.name);
  const web = await podAdd(lab, 'web', { node: nodes[1]!, labels: { app: 'web' }, serve: [80] });
  const client = await podAdd(lab, 'client', { node: nodes[0]!, labels: { role: 'client' } });
  return { nodes, web, client };
}

export async function l7Phase(lab: string, o: L7Options): Promise<L7Sample[]> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-bench-'));
  try {
    const { nodes, web, client } = await l7Lab(lab);
    const url = `http://${web.ip}/public`;
    const samples: L7Sample[] = [];
    let applied: string[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      for (const policy of (round % 2 ? ['l4', 'l7'] : ['l7', 'l4']) as L7Policy[]) {
        applied = await applyPolicy(lab, tmp, policy, client.netns, web.ip, 'l7 bench');
        const st = loadLab(lab);
        const agentOf = (node: string): number => st.nodes.find((n) => n.name === node)!.pid;
        const serverAgent = agentOf(nodes[1]!);
        const proxy = policy === 'l7' ? proxyPidOf(serverAgent) : undefined;
        const sockets = [nodes[0]!, nodes[1]!].map((node) => st.nodes.find((n) => n.name === node)!.socket);
        const pids: Partial<Record<CpuRole, number>> = { 'client agent': agentOf(nodes[0]!), 'server agent': serverAgent, server: web.serve!.pid, ...(proxy ? { proxy } : {}) };
        for (const test of ['keepalive', 'close', 'rate'] as L7Test[]) {
          const seen0 = await Promise.all(sockets.map(seenFlows));
          const before = cpuSnapshot(pids);
          const result = await load(client.netns, url, test, o);
          const cpu = perRequest(before, cpuSnapshot(pids), result.requests);
          const seen1 = await Promise.all(sockets.map(seenFlows));
          const per = (i: number): number | undefined => (seen0[i] !== undefined && seen1[i] !== undefined && result.requests > 0 ? (seen1[i]! - seen0[i]!) / result.requests : undefined);
          const flows = { client: per(0), server: per(1) };
          if (result.cpuUs !== undefined && result.requests > 0) cpu.client = result.cpuUs / result.requests;
          o.say(`l7: round ${round} ${policy} ${test}: ${result.rps.toFixed(0)} req/s, p50 ${result.p50ms.toFixed(2)} ms, p99 ${result.p99ms.toFixed(2)} ms, ${result.errors} error(s)`);
          samples.push({ policy, test, round, result, cpu, flows });
        }
      }
    }
    for (const r of applied) await labPolicyDelete(lab, r);
    return samples;
  } finally {
    await labDown(lab);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The phase's report section: medians per policy and test, ratios L7 / L4 and the targets. */
export function l7Report(samples: readonly L7Sample[], o: { secs: number; rounds: number; conc?: number; rate?: number }): string[] {
  const med = (p: L7Policy, t: L7Test, k: 'rps' | 'p50ms' | 'p99ms'): number => median(samples.filter((s) => s.policy === p && s.test === t).map((s) => s.result[k]));
  const errors = samples.reduce((n, s) => n + s.result.errors, 0);
  const rate = o.rate ?? 1000;
  const ka = med('l7', 'keepalive', 'rps') / med('l4', 'keepalive', 'rps');
  const cl = med('l7', 'close', 'rps') / med('l4', 'close', 'rps');
  const addedP99 = med('l7', 'rate', 'p99ms') - med('l4', 'rate', 'p99ms');
  const addedP50 = med('l7', 'rate', 'p50ms') - med('l4', 'rate', 'p50ms');
  const mark = (ok: boolean): string => (ok ? 'met' : 'NOT met');
  return [
    `## L7 HTTP policy: client -> server on another node (tunnel), L7 rule (node proxy) vs L4-only allow (medians of ${o.rounds} round(s), ${o.secs} s each, interleaved; Node HTTP client, ${o.conc ?? 8} connections)`,
    '',
    '| test | L4-only allow | L7 rule | L7 / L4 | target |',
    '|---|---:|---:|---:|---|',
    `| keep-alive, req/s | ${med('l4', 'keepalive', 'rps').toFixed(0)} | ${med('l7', 'keepalive', 'rps').toFixed(0)} | ${ka.toFixed(2)}x | >= 0.5x: ${mark(ka >= 0.5)} |`,
    `| one connection per request, req/s | ${med('l4', 'close', 'rps').toFixed(0)} | ${med('l7', 'close', 'rps').toFixed(0)} | ${cl.toFixed(2)}x | >= 0.35x: ${mark(cl >= 0.35)} |`,
    `| keep-alive p50 / p99 at saturation, ms | ${med('l4', 'keepalive', 'p50ms').toFixed(2)} / ${med('l4', 'keepalive', 'p99ms').toFixed(2)} | ${med('l7', 'keepalive', 'p50ms').toFixed(2)} / ${med('l7', 'keepalive', 'p99ms').toFixed(2)} | | |`,
    `| ${rate} req/s offered: p50, ms | ${med('l4', 'rate', 'p50ms').toFixed(2)} | ${med('l7', 'rate', 'p50ms').toFixed(2)} | ${signed(addedP50)} ms | |`,
    `| ${rate} req/s offered: p99, ms | ${med('l4', 'rate', 'p99ms').toFixed(2)} | ${med('l7', 'rate', 'p99ms').toFixed(2)} | ${signed(addedP99)} ms | <= 1 ms added: ${mark(addedP99 <= 1)} |`,
    `| ${rate} req/s offered: achieved req/s | ${med('l4', 'rate', 'rps').toFixed(0)} | ${med('l7', 'rate', 'rps').toFixed(0)} | | |`,
    '',
    ...cpuTable(samples),
    `- ${errors} failed request(s) over the phase. The client is Node's http module (bench/l7-load.ts) in the client pod; the server is the lab's pod web server.`,
    '',
  ];
}

/** CPU µs per request of each process (medians), saturation tests: where the box's CPU goes per request. */
function cpuTable(samples: readonly L7Sample[]): string[] {
  const med = (p: L7Policy, t: L7Test, role: CpuRole): number | undefined => {
    const v = samples.filter((s) => s.policy === p && s.test === t && s.cpu?.[role] !== undefined).map((s) => s.cpu![role]!);
    return v.length ? median(v) : undefined;
  };
  const cols: [L7Policy, L7Test][] = [['l4', 'keepalive'], ['l7', 'keepalive'], ['l4', 'close'], ['l7', 'close']];
  const rows = CPU_ROLES.filter((role) => cols.some(([p, t]) => med(p, t, role) !== undefined));
  if (rows.length === 0) return [];
  const cell = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(0));
  const total = (p: L7Policy, t: L7Test): number => rows.reduce((n, role) => n + (med(p, t, role) ?? 0), 0);
  const flows = (p: L7Policy, t: L7Test, side: 'client' | 'server'): number | undefined => {
    const v = samples.filter((s) => s.policy === p && s.test === t && s.flows?.[side] !== undefined).map((s) => s.flows![side]!);
    return v.length ? median(v) : undefined;
  };
  const flowCell = (v: number | undefined): string => (v === undefined ? '-' : v.toFixed(1));
  return [
    'CPU per request by process (µs, /proc/PID/stat ticks over each run ÷ requests, medians; all share the same CPUs):',
    '',
    '| process | keep-alive L4 | keep-alive L7 | conn/req L4 | conn/req L7 |',
    '|---|---:|---:|---:|---:|',
    ...rows.map((role) => `| ${role} | ${cols.map(([p, t]) => cell(med(p, t, role))).join(' | ')} |`),
    `| sum | ${cols.map(([p, t]) => total(p, t).toFixed(0)).join(' | ')} |`,
    `| flows per request, client node | ${cols.map(([p, t]) => flowCell(flows(p, t, 'client'))).join(' | ')} |`,
    `| flows per request, server node | ${cols.map(([p, t]) => flowCell(flows(p, t, 'server'))).join(' | ')} |`,
    '',
  ];
}
