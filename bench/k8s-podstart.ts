// Pod start on the kit's kubelet node, Tendril (the DaemonSet install) vs the kit's reference bridge plugin, same
// run: N pods created through the API at once; per pod creation -> Ready (client side: the create call sent to the
// Ready condition seen by polling the list), containerd's RunPodSandbox (its own log timestamps, start -> "returns sandbox
// id": netns + CNI + pause) and the CNI ADD as containerd executes it (a timing wrapper named like the plugin,
// first in the CNI bin dirs, records exec -> exit of the real plugin). Each plugin gets a fresh kit run.
// Standalone: `node dist/bench/k8s-podstart.js [--pods N] [--keep DIR] [--host-cgroup]` (root, TENDRIL_K8S_KIT); run.ts runs it as a phase.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { CoreV1Api, KubeConfig, KubernetesObjectApi, type KubernetesObject, type V1Pod } from '@kubernetes/client-node';
import { REPO_ROOT } from '../src/lab/paths.js';
import { ApiClient } from '../src/util/api-client.js';
import type { StatusView } from '../src/agent/index.js';
import type { CniTimingsView } from '../src/cni/index.js';
import { startKit, type Kit } from '../src/lab/k8s-kit.js';
import { deletePods, installOnKitNode, type TendrilOnKit } from '../src/lab/k8s-node.js';
import { percentile } from './stats.js';
import { profileHotspots } from '../src/util/cpu-profile.js';

export type PodStartPlugin = 'bridge' | 'tendril';

export interface PodStartResult {
  plugin: PodStartPlugin;
  pods: number;
  /** ms per Ready pod */
  readyMs: number[];
  sandboxMs: number[];
  /** containerd's CreateContainer and StartContainer of the pods' containers (absent in results of older runs). */
  createMs?: number[];
  startMs?: number[];
  /** The kubelet's podStartSLOduration per pod (its log). */
  kubeletMs?: number[];
  cniAddMs: number[];
  notReady: number;
  wallMs: number;
  /** tendril: the agent's own per-phase timings of its CNI ADDs (GET /v1/healthz cni-timings), where the tail goes. */
  addPhases?: CniTimingsView;
  /** tendril: the agent process's scheduler counters over the burst (creation of the first pod to the last Ready). */
  agentSched?: SchedDelta;
  /** /proc/loadavg's 1-minute figure when the burst ended (the machine is shared). */
  load1?: number;
  /** tendril: pods still on their tc filter when the last pod was Ready, and switched to tcx by then (status 'tcx-switch'). */
  tcxAtReady?: { bridged: number; switched: number };
  /** 'node': containerd and kubelet in the run's cpu cgroup with the pods (nodeCgroup()); 'host': where the kit started them. */
  cgroup?: 'node' | 'host';
}

/** Scheduler time of a process's threads (/proc/PID/task/TID/schedstat), ms. */
export interface SchedDelta {
  /** on a CPU */
  runMs: number;
  /** runnable, waiting for a CPU (the machine's load, and the cgroup's share of it) */
  waitMs: number;
  wallMs: number;
}

/** Sums the threads' schedstat lines ("ns-on-cpu ns-waiting timeslices") of a process; undefined when it is gone. */
export function processSched(pid: number, proc = '/proc'): { runNs: number; waitNs: number } | undefined {
  let tids: string[];
  try {
    tids = fs.readdirSync(path.join(proc, String(pid), 'task'));
  } catch {
    return undefined;
  }
  let runNs = 0;
  let waitNs = 0;
  for (const tid of tids) {
    try {
      const [run, wait] = fs.readFileSync(path.join(proc, String(pid), 'task', tid, 'schedstat'), 'utf8').trim().split(/\s+/).map(Number);
      runNs += run ?? 0;
      waitNs += wait ?? 0;
    } catch {
      // the thread ended
    }
  }
  return { runNs, waitNs };
}

/**
 * The host PID of the agent of the kit's node: the process of the kit's pod cgroups (K8S_CGROUP_ROOT of the run's
 * node.env, any hierarchy) whose command line is Tendril's agent.
 */
export function kitAgentPid(runDir: string): number | undefined {
  const env = fs.existsSync(path.join(runDir, 'node.env')) ? fs.readFileSync(path.join(runDir, 'node.env'), 'utf8') : '';
  const root = /^K8S_CGROUP_ROOT=(\S+)$/m.exec(env)?.[1];
  if (!root) return undefined;
  const tops = [path.join('/sys/fs/cgroup', root), ...['cpu', 'cpu,cpuacct', 'cpuacct', 'pids'].map((h) => path.join('/sys/fs/cgroup', h, root))];
  const top = tops.find((d) => fs.existsSync(d));
  if (!top) return undefined;
  const pids: number[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      if (e.isDirectory()) walk(path.join(d, e.name));
      else if (e.name === 'cgroup.procs') pids.push(...fs.readFileSync(path.join(d, e.name), 'utf8').split('\n').filter(Boolean).map(Number));
    }
  };
  walk(top);
  return pids.find((pid) => {
    try {
      const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.endsWith('cli/main.js')) && argv.includes('agent');
    } catch {
      return false;
    }
  });
}

/**
 * Moves the kit node's daemons (containerd and kubelet, with every process they started so far; the CNI plugins,
 * shims and runc they start later inherit it) into `system` under the run's cpu cgroup (K8S_CGROUP_ROOT), beside
 * kubepods, as a systemd node has system.slice beside kubepods.slice: the node's work competes with the rest of the
 * shared machine as one group, and within it the daemons as one group against the pods. As the kit starts them, they
 * are root-cgroup tasks of full weight each: every containerd thread, runc and bridge plugin process competes one by
 * one with every other process of the machine, while all of kubepods (the Tendril agent among the pods) weighs as
 * much as one such task (under a load of 20 the agent waited for a CPU 9-33 s of a burst and ran 0.7-1.8 s). cgroup
 * v1 only (v2 keeps no processes in a cgroup with children); returns how many processes moved, or why none did.
 */
export function nodeCgroup(runDir: string): number | string {
  const env = fs.existsSync(path.join(runDir, 'node.env')) ? fs.readFileSync(path.join(runDir, 'node.env'), 'utf8') : '';
  const root = /^K8S_CGROUP_ROOT=(\S+)$/m.exec(env)?.[1];
  if (!root) return 'no K8S_CGROUP_ROOT in node.env';
  const top = ['cpu', 'cpu,cpuacct'].map((h) => path.join('/sys/fs/cgroup', h, root)).find((d) => fs.existsSync(path.join(d, 'cgroup.procs')));
  if (!top) return 'no cgroup v1 cpu hierarchy';
  // A node's system.slice: its own group (default weight 1024) beside kubepods (2048 on 2 CPUs), as on a systemd
  // node; down.sh removes it with the run's cgroup (rmdir depth first).
  fs.mkdirSync(path.join(top, 'system'), { recursive: true });
  const procs = path.join(top, 'system', 'cgroup.procs');
  const daemons = ['containerd', 'kubelet'].map((n) => Number(fs.readFileSync(path.join(runDir, 'pids', `${n}.pid`), 'utf8').trim()));
  const children = new Map<number, number[]>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(e)]);
    } catch {
      // gone
    }
  }
  const tree: number[] = [];
  const visit = (pid: number): void => {
    tree.push(pid);
    for (const c of children.get(pid) ?? []) visit(c);
  };
  for (const d of daemons) visit(d);
  let moved = 0;
  for (const pid of tree) {
    try {
      fs.writeFileSync(procs, `${pid}\n`);
      moved++;
    } catch {
      // exited meanwhile
    }
  }
  return moved;
}

const NS = 'podstart';
/** --keep: how long the agent's CPU profile runs from the pods' creation on. */
const PROFILE_MS = 30_000;

function wrapper(real: string, log: string): string {
  return `#!/bin/bash\n# bench timing wrapper of ${real}\nt0=$(date +%s%N)\n${real}\nrc=$?\nt1=$(date +%s%N)\necho "$CNI_COMMAND $CNI_CONTAINERID $t0 $t1 $rc" >>${log}\nexit $rc\n`;
}

/** containerd's RunPodSandbox durations (ms) of the pods of namespace `ns`, from its log. */
export function sandboxTimes(containerdLog: string, ns: string): number[] {
  const start = new Map<string, number>();
  const out: number[] = [];
  for (const line of containerdLog.split('\n')) {
    const m = /^time="([^"]+)".*RunPodSandbox for &PodSandboxMetadata\{Name:([^,]+),Uid:[^,]*,Namespace:([^,]+),Attempt:(\d+),\}( returns sandbox id)?/.exec(line);
    if (!m || m[3] !== ns) continue;
    const t = Date.parse(m[1]!) + Number((/\.\d{3}(\d{0,6})/.exec(m[1]!)?.[1] ?? '').padEnd(6, '0')) / 1e6;
    const key = `${m[2]}/${m[4]}`;
    if (!m[5]) start.set(key, t);
    else if (start.has(key)) out.push(t - start.get(key)!);
  }
  return out;
}

function logTime(stamp: string): number {
  return Date.parse(stamp) + Number((/\.\d{3}(\d{0,6})/.exec(stamp)?.[1] ?? '').padEnd(6, '0')) / 1e6;
}

/** containerd's CreateContainer and StartContainer durations (ms) of the containers of namespace `ns`'s pods, from its log. */
export function containerTimes(containerdLog: string, ns: string): { createMs: number[]; startMs: number[] } {
  const sandboxes = new Set<string>();
  const containers = new Set<string>();
  const began = new Map<string, number>();
  const createMs: number[] = [];
  const startMs: number[] = [];
  for (const line of containerdLog.split('\n')) {
    const t = /^time="([^"]+)"/.exec(line)?.[1];
    if (!t) continue;
    let m = /RunPodSandbox for &PodSandboxMetadata\{Name:[^,]+,Uid:[^,]*,Namespace:([^,]+),.* returns sandbox id \\"([0-9a-f]+)/.exec(line);
    if (m) {
      if (m[1] === ns) sandboxes.add(m[2]!);
      continue;
    }
    m = /CreateContainer within sandbox \\"([0-9a-f]+)\\" for (?:container )?&ContainerMetadata\{Name:([^,]+),Attempt:(\d+),\}(?: returns container id \\"([0-9a-f]+))?/.exec(line);
    if (m) {
      if (!sandboxes.has(m[1]!)) continue;
      const key = `c:${m[1]}/${m[2]}/${m[3]}`;
      if (!m[4]) began.set(key, logTime(t));
      else if (began.has(key)) {
        createMs.push(logTime(t) - began.get(key)!);
        containers.add(m[4]);
      }
      continue;
    }
    m = /StartContainer for \\"([0-9a-f]+)\\"( returns successfully)?/.exec(line);
    if (m && containers.has(m[1]!)) {
      const key = `s:${m[1]}`;
      if (!m[2]) began.set(key, logTime(t));
      else if (began.has(key)) startMs.push(logTime(t) - began.get(key)!);
    }
  }
  return { createMs, startMs };
}

/** The kubelet's own pod startup SLO durations (ms; image pulls excluded, creation timestamp to running seen) of namespace `ns`'s pods. */
export function kubeletStartTimes(kubeletLog: string, ns: string): number[] {
  const out: number[] = [];
  for (const line of kubeletLog.split('\n')) {
    const m = /"Observed pod startup duration" pod="([^/"]+)\/[^"]+" podStartSLOduration=([0-9.]+)/.exec(line);
    if (m && m[1] === ns) out.push(Number(m[2]) * 1000);
  }
  return out;
}

/** `keep`: a directory the run's logs (containerd, kubelet, the pods' incl. the agent's, CNI timings) are copied to before the kit goes. */
export async function podStartRun(plugin: PodStartPlugin, pods: number, portBase: number, say: (s: string) => void, keep?: string, hostCgroup = false): Promise<PodStartResult> {
  const image = plugin === 'tendril' ? execFileSync('bash', [path.join(REPO_ROOT, 'scripts/build-image.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim() : '';
  let kit: Kit | undefined;
  let tendril: TendrilOnKit | undefined;
  let kc: KubeConfig | undefined;
  let stopPoll: (() => Promise<void>) | undefined;
  try {
    kit = await startKit({ portBase, env: { K8S_ALLOCATE_NODE_CIDRS: plugin === 'bridge' ? 'true' : 'false' } });
    kc = new KubeConfig();
    kc.loadFromFile(kit.kubeconfig);
    const core = kc.makeApiClient(CoreV1Api);
    const wrap = path.join(kit.runDir, 'cni-wrap');
    const timing = path.join(kit.runDir, 'cni-timing.log');
    fs.mkdirSync(wrap, { recursive: true });
    if (plugin === 'bridge') {
      fs.writeFileSync(path.join(wrap, 'bridge'), wrapper('/usr/lib/cni/bridge', timing), { mode: 0o755 });
      await kit.script('node.sh', [], { K8S_CNI_BIN_DIR: `${wrap}:/usr/lib/cni` });
    } else {
      fs.writeFileSync(path.join(wrap, 'tendril-cni'), wrapper(path.join(kit.runDir, 'tendril/cni-bin/tendril-cni'), timing), { mode: 0o755 });
      tendril = await installOnKitNode(kit, { run: `ps${process.pid % 100000}`, image, repo: REPO_ROOT, kc, wrapDir: wrap });
      const agent = new ApiClient(tendril.socket);
      const deadline = Date.now() + 300_000;
      for (;;) {
        const ok = await agent.get<{ ipam: unknown }>('/v1/healthz').then((s) => s.ipam !== null, () => false);
        if (ok && fs.existsSync(path.join(tendril.dirs.conf, '05-tendril.conflist'))) break;
        if (Date.now() > deadline) throw new Error('tendril agent (DaemonSet pod) not ready after 300 s');
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    const deadline = Date.now() + 300_000;
    for (;;) {
      const n = (await core.listNode()).items[0];
      const sa = await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' }).then(() => true, () => false);
      if (sa && n?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) break;
      if (Date.now() > deadline) throw new Error(`node not Ready after 300 s (${plugin})`);
      await new Promise((r) => setTimeout(r, 200));
    }
    let cgroup: PodStartResult['cgroup'] = 'host';
    if (!hostCgroup) {
      const moved = nodeCgroup(kit.runDir);
      if (typeof moved === 'number') cgroup = 'node';
      else say(`podstart: node daemons left in their cgroup: ${moved}`);
    }
    const objects = KubernetesObjectApi.makeApiClient(kc);
    await objects.create({ apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } } as KubernetesObject);
    for (let i = 0; ; i++) { // the ServiceAccount admission needs the namespace's default account
      if (await core.readNamespacedServiceAccount({ name: 'default', namespace: NS }).then(() => true, () => false)) break;
      if (i > 600) throw new Error('no default ServiceAccount in the bench namespace');
      await new Promise((r) => setTimeout(r, 100));
    }
    const sent = new Map<string, number>();
    const ready = new Map<string, number>();
    // Ready seen by polling the list every 100 ms (a watch here lost events under load): ±100 ms per pod
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const items = await core.listNamespacedPod({ namespace: NS }).then((l) => l.items, () => [] as V1Pod[]);
        const now = performance.now();
        for (const p of items) {
          const name = p.metadata?.name ?? '';
          if (!ready.has(name) && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ready.set(name, now);
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    stopPoll = async () => { polling = false; await poller; };
    // With --keep: a CPU profile of the agent over the burst (where its event loop's time goes).
    const profiling = keep && tendril
      ? new ApiClient(tendril.socket).get(`/v1/debug/cpu-profile?ms=${PROFILE_MS}`, PROFILE_MS + 60_000).catch((e: Error) => (say(`podstart: no agent CPU profile: ${e.message}`), undefined))
      : undefined;
    say(`podstart ${plugin}: ${pods} pods at once`);
    const agentPid = tendril ? kitAgentPid(kit.runDir) : undefined;
    if (tendril && agentPid === undefined) say('podstart: the agent\'s host PID not found (no scheduler counters)');
    const sched0 = agentPid !== undefined ? processSched(agentPid) : undefined;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: pods }, async (_, i) => {
      const name = `p${i}`;
      sent.set(name, performance.now());
      await objects.create({
        apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NS, labels: { app: 'podstart' } },
        spec: { automountServiceAccountToken: false, terminationGracePeriodSeconds: 0,
          containers: [{ name: 'c', image: 'localhost/busybox:local', imagePullPolicy: 'Never', command: ['/bin/sleep', '100000'] }] },
      } as KubernetesObject);
    }));
    const until = Date.now() + 600_000;
    while (ready.size < pods && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    const wallMs = performance.now() - t0;
    const sched1 = agentPid !== undefined ? processSched(agentPid) : undefined;
    const agentSched = sched0 && sched1 ? { runMs: (sched1.runNs - sched0.runNs) / 1e6, waitMs: (sched1.waitNs - sched0.waitNs) / 1e6, wallMs } : undefined;
    const load1 = Number(fs.readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
    const tcxAtReady = tendril
      ? await new ApiClient(tendril.socket).get<StatusView>('/v1/healthz').then((st) => st['tcx-switch'] ?? undefined, () => undefined)
      : undefined;
    await stopPoll();
    stopPoll = undefined;
    const readyMs = [...ready].map(([n, t]) => t - sent.get(n)!);
    if (profiling) {
      const profile = await profiling;
      if (profile) {
        fs.mkdirSync(path.join(keep!, plugin), { recursive: true });
        fs.writeFileSync(path.join(keep!, plugin, 'agent.cpuprofile'), JSON.stringify(profile));
        fs.writeFileSync(path.join(keep!, plugin, 'agent-hotspots.txt'), profileHotspots(profile as Parameters<typeof profileHotspots>[0], 80).map((h) => `${String(h.ms).padStart(7)} ms (self ${String(h.selfMs).padStart(6)})  ${h.fn}`).join('\n') + '\n');
      }
    }
    const containerdLog = fs.readFileSync(path.join(kit.runDir, 'logs/containerd.log'), 'utf8');
    const sandboxMs = sandboxTimes(containerdLog, NS);
    const { createMs, startMs } = containerTimes(containerdLog, NS);
    const kubeletMs = kubeletStartTimes(fs.readFileSync(path.join(kit.runDir, 'logs/kubelet.log'), 'utf8'), NS);
    const cniAddMs = fs.existsSync(timing)
      ? fs.readFileSync(timing, 'utf8').split('\n').filter((l) => l.startsWith('ADD ')).map((l) => l.split(' ')).filter((f) => f[4] === '0').map((f) => (Number(f[3]) - Number(f[2])) / 1e6)
      : [];
    const addPhases = tendril
      ? await new ApiClient(tendril.socket).get<StatusView>('/v1/healthz').then((st) => st['cni-timings'].find((t) => t.verb === 'ADD'), () => undefined)
      : undefined;
    return { plugin, pods, readyMs, sandboxMs, createMs, startMs, kubeletMs, cniAddMs, notReady: pods - ready.size, wallMs, ...(addPhases ? { addPhases } : {}), ...(agentSched ? { agentSched } : {}), cgroup, ...(tcxAtReady ? { tcxAtReady: { bridged: tcxAtReady.bridged, switched: tcxAtReady.switched } } : {}), load1 };
  } finally {
    await stopPoll?.();
    if (keep && kit) keepLogs(kit.runDir, path.join(keep, plugin), say);
    if (kc) await deletePods(kc, NS).catch(() => {});
    if (kit) await kit.script('down.sh', []).catch((e: Error) => say(e.message));
    await tendril?.cleanup();
    await kit?.down().catch((e: Error) => say(e.message));
  }
}

function keepLogs(runDir: string, to: string, say: (s: string) => void): void {
  try {
    fs.mkdirSync(to, { recursive: true });
    for (const [from, name] of [['logs', 'logs'], ['node/pod-logs', 'pod-logs'], ['cni-timing.log', 'cni-timing.log']] as const) {
      const src = path.join(runDir, from);
      if (fs.existsSync(src)) fs.cpSync(src, path.join(to, name), { recursive: true, dereference: true });
    }
  } catch (err) {
    say(`podstart: cannot keep the logs in ${to}: ${(err as Error).message}`);
  }
}

const loopText = (v: CniTimingsView) => {
  const l = v['event-loop-delay'];
  return l ? `; agent event-loop delay while ADDs ran ${f2(l.p50)}/${f2(l.p99)}/${f2(l.max)}` : '';
};
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : '-');
const pct = (xs: number[], q: number) => (xs.length ? percentile(xs, q) : NaN);
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-');
const ratio = (a: number, b: number) => (b > 0 && Number.isFinite(a) ? `${(a / b).toFixed(2)}x` : '-');

export function podStartReport(rs: PodStartResult[]): string[] {
  const br = rs.find((r) => r.plugin === 'bridge');
  const row = (label: string, pick: (r: PodStartResult) => number[]) => rs.map((r) => {
    const xs = pick(r);
    const p50 = pct(xs, 0.5);
    const p99 = pct(xs, 0.99);
    const b = br ? pick(br) : [];
    return `| ${label} | ${r.plugin} | ${xs.length} | ${f(p50)} | ${f(p99)} | ${r.plugin === 'bridge' ? '1.00x' : ratio(p50, pct(b, 0.5))} | ${r.plugin === 'bridge' ? '1.00x' : ratio(p99, pct(b, 0.99))} |`;
  });
  return [
    `## Kubernetes pod start (${rs[0]?.pods ?? 0} pods at once on the kit's kubelet node, ms)`,
    '',
    '| measure | plugin | n | p50 | p99 | p50 vs bridge | p99 vs bridge |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...row('CNI ADD (containerd exec of the plugin)', (r) => r.cniAddMs),
    ...row('RunPodSandbox (containerd log)', (r) => r.sandboxMs),
    ...(rs.some((r) => r.createMs?.length) ? row('CreateContainer (containerd log)', (r) => r.createMs ?? []) : []),
    ...(rs.some((r) => r.startMs?.length) ? row('StartContainer (containerd log)', (r) => r.startMs ?? []) : []),
    ...(rs.some((r) => r.kubeletMs?.length) ? row('pod startup (kubelet podStartSLOduration)', (r) => r.kubeletMs ?? []) : []),
    ...row('creation -> Ready (API)', (r) => r.readyMs),
    '',
    ...rs.map((r) => `- ${r.plugin}: all ${r.pods - r.notReady}/${r.pods} Ready after ${(r.wallMs / 1000).toFixed(1)} s${r.notReady ? ` (**${r.notReady} not Ready**)` : ''}`),
    ...rs.filter((r) => r.agentSched).map((r) => `- ${r.plugin} agent process over the burst (${f2(r.agentSched!.wallMs / 1000)} s): on a CPU ${f2(r.agentSched!.runMs / 1000)} s, runnable but waiting for a CPU ${f2(r.agentSched!.waitMs / 1000)} s (its threads' schedstat)`),
    ...rs.filter((r) => r.cgroup).map((r) => `- ${r.plugin}: ${r.cgroup === 'node' ? "containerd and kubelet (so the CNI plugin's processes) moved into a system group beside kubepods in the run's cpu cgroup, as on a systemd node" : "containerd and kubelet left where the kit started them (root cgroup: each plugin process weighs as much as all of kubepods)"}`),
    ...rs.filter((r) => r.tcxAtReady).map((r) => `- ${r.plugin}: when the last pod was Ready ${r.tcxAtReady!.bridged} pods were still on their tc filter, ${r.tcxAtReady!.switched} switched to tcx (the switch waits for no ADD in flight and quiet)`),
    ...rs.filter((r) => r.load1 !== undefined).map((r) => `- ${r.plugin}: machine load (1 min) at the end of the burst ${r.load1}`),
    ...rs.filter((r) => r.addPhases).map((r) => `- ${r.plugin} agent-side ADD phases over its last ${r.addPhases!.calls} ADDs (ms, p50/p99/max): total ${f(r.addPhases!.total.p50)}/${f(r.addPhases!.total.p99)}/${f(r.addPhases!.total.max)}; ${r.addPhases!.phases.map((ph) => `${ph.phase} ${f(ph.p50)}/${f(ph.p99)}/${f(ph.max)}`).join(', ')}${loopText(r.addPhases!)}`),
    '- bridge: the kit\'s reference bridge + host-local; tendril: the install/kubernetes DaemonSet (agent in a pod, tcx). Fresh kit run each. CNI ADD from a timing wrapper around the real plugin (exec → exit).',
    '',
  ];
}

/** Runs bridge, then tendril; returns the report lines (throws without TENDRIL_K8S_KIT). */
export async function podStartPhase(pods: number, say: (s: string) => void, keep?: string, hostCgroup = false): Promise<{ results: PodStartResult[]; report: string[] }> {
  const base = 16660 + (process.pid % 6) * 6; // 16660-16695 (test/k8s-node: 16600-16659)
  const results = [await podStartRun('bridge', pods, base, say, keep, hostCgroup), await podStartRun('tendril', pods, base, say, keep, hostCgroup)];
  return { results, report: podStartReport(results) };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--pods');
  const pods = i > 0 ? Number(process.argv[i + 1]) : 50;
  const k = process.argv.indexOf('--keep');
  podStartPhase(pods, (s) => process.stderr.write(`${s}\n`), k > 0 ? process.argv[k + 1] : undefined, process.argv.includes('--host-cgroup')).then(
    ({ report }) => { process.stdout.write(report.join('\n') + '\n'); process.exit(0); },
    (err: unknown) => { process.stderr.write(`k8s-podstart: ${err instanceof Error ? err.stack : String(err)}\n`); process.exit(1); },
  );
}
