// CNI ADD/DEL latency as a runtime sees it: exec of the plugin with env + stdin until exit, N pods at concurrency C.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pluginConfig, type LabPod } from '../src/lab/lab.js';
import { CNI_BIN_DIR, labPaths, netnsPath } from '../src/lab/paths.js';
import type { BenchNetns } from './netns.js';
import { ApiClient } from '../src/util/api-client.js';
import type { StatusView } from '../src/agent/index.js';
import { BenchError, inNs, runAsync, sleep } from './proc.js';
import { REF_CNI_DIR, refPluginConfig } from './scenarios.js';

export type CniPlugin = 'tendril' | 'tendril-tc' | 'ptp';

export interface CniOp {
  plugin: CniPlugin;
  pods: number;
  conc: number;
  op: 'ADD' | 'DEL';
  /** Per-pod latency in ms, successful and failed alike (a failure is still what the runtime waited for). */
  ms: number[];
  failures: number;
  /** First failure's output, for the report. */
  firstError?: string;
  wallMs: number;
  /** ADD only, tcx: ms after the pass until no pod of the node ran on a tc filter any more (the switch to tcx). */
  settledMs?: number;
  /** ADD only, tcx: pods still on tc filters when the bench stopped waiting (a loaded box; DEL ran anyway). */
  unsettled?: number;
}

export interface CniTarget {
  plugin: CniPlugin;
  /** Namespace the timer (and so every plugin exec) runs in: the node's, as a runtime's. */
  nodeNs: string;
  exe: string;
  cniPath: string;
  /** Stdin of one pod's call; `prev` is the ADD result handed back on DEL, as libcni does. */
  config(pod: LabPod, prev?: unknown): string;
  /** After the ADD pass: waits for background work the ADDs left (the tcx switch): how long it took, or what is left. */
  settle?: () => Promise<{ ms: number } | { left: number }>;
  /** Tendril: the agent's per-phase timings of its last CNI calls (status --verbose). */
  timings?: () => Promise<StatusView['cni-timings']>;
}

/** Tendril's shim against the lab node's agent; configs come from the conflist the agent wrote. */
export function tendrilTarget(lab: string, plugin: CniPlugin = 'tendril'): CniTarget {
  const t: CniTarget = {
    plugin,
    nodeNs: labPaths(lab).node('ctr').netns,
    exe: path.join(CNI_BIN_DIR, 'tendril-cni'),
    cniPath: CNI_BIN_DIR,
    config: (pod, prev) => pluginConfig(lab, pod, prev),
    timings: async () => (await new ApiClient(labPaths(lab).node('ctr').socket).get<StatusView>('/v1/healthz'))['cni-timings'],
  };
  if (plugin === 'tendril') t.settle = () => tcxSettled(new ApiClient(labPaths(lab).node('ctr').socket));
  return t;
}

/**
 * Polls the agent's attachments until none is a tc filter: every pod started on one has been switched to tcx. Not
 * too often: listing every hook of 200 pods is work on the agent's event loop, which the switch needs too.
 */
async function tcxSettled(c: ApiClient, timeoutMs = 120_000): Promise<{ ms: number } | { left: number }> {
  const t0 = performance.now();
  for (;;) {
    const att = await c.get<Array<{ attach: string }>>('/v1/datapath/attachments');
    const left = att.filter((a) => a.attach === 'tc').length;
    if (left === 0) return { ms: performance.now() - t0 };
    // Reported, not fatal: the ADD figures stand, and DEL of a pod on its filter is a DEL too.
    if (performance.now() - t0 > timeoutMs) return { left };
    await sleep(250);
  }
}

/** The reference ptp plugin with host-local IPAM on the bench's own CNI node namespace. */
export function ptpTarget(nets: BenchNetns, tmpDir: string): CniTarget {
  const dataDir = path.join(tmpDir, 'ipam-cni-latency');
  fs.mkdirSync(dataDir, { recursive: true });
  const base = JSON.parse(refPluginConfig('ptp', 'tdlb-ptp-latency', '10.231.0.0/16', dataDir)) as Record<string, unknown>;
  return {
    plugin: 'ptp',
    nodeNs: nets.list().includes(nets.name('cl-node')) ? nets.name('cl-node') : nets.add('cl-node'),
    exe: path.join(REF_CNI_DIR, 'ptp'),
    cniPath: REF_CNI_DIR,
    config: (_pod, prev) => JSON.stringify(prev === undefined ? base : { ...base, prevResult: prev }),
  };
}

interface Job {
  pod: LabPod;
  args: string;
  in: string;
  out: string;
}

/** One timed pass of `op` over all jobs through bench/tools/cnirun inside the node namespace. */
async function timedPass(cnirun: string, t: CniTarget, op: 'ADD' | 'DEL', jobs: Job[], conc: number, dir: string): Promise<CniOp> {
  const jobFile = path.join(dir, `${op}.jobs`);
  fs.writeFileSync(jobFile, jobs.map((j) => [j.pod.containerId, netnsPath(j.pod.netns), j.in, j.out, j.args].join('\t') + '\n').join(''));
  const argv = [cnirun, '-m', op, '-x', t.exe, '-c', String(conc), '-e', `PATH=${process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin'}`, '-e', `CNI_PATH=${t.cniPath}`, jobFile];
  const t0 = performance.now();
  const r = await runAsync(inNs(t.nodeNs, argv), { timeoutMs: 600_000 });
  const wallMs = performance.now() - t0;
  const ms: number[] = [];
  let failures = 0;
  let firstError: string | undefined;
  for (const line of r.stdout.trim().split('\n')) {
    const [idx, us, code] = line.split('\t').map(Number);
    if (idx === undefined || us === undefined || code === undefined || Number.isNaN(us)) throw new BenchError(`Unexpected cnirun output line "${line}"`);
    ms.push(us / 1000);
    if (code !== 0) {
      failures++;
      const job = jobs[idx];
      if (firstError === undefined && job) firstError = `${t.plugin} ${op} ${job.pod.name}: exit ${code}: ${readOr(job.out)}${readOr(job.out + '.err')}`.trim();
    }
  }
  if (ms.length !== jobs.length) throw new BenchError(`cnirun reported ${ms.length} of ${jobs.length} ${op} calls`);
  return { plugin: t.plugin, pods: jobs.length, conc, op, ms, failures, ...(firstError !== undefined ? { firstError } : {}), wallMs };
}

function readOr(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().slice(0, 400) + ' ';
  } catch {
    return '';
  }
}

/**
 * N pods: namespaces created first (untimed, the runtime's sandbox step), then ADD for all, then DEL for all
 * with the ADD result as prevResult, then the namespaces go. Returns the ADD and DEL passes.
 */
export async function cniLatency(cnirun: string, nets: BenchNetns, t: CniTarget, pods: number, conc: number, tmpDir: string): Promise<[CniOp, CniOp]> {
  const tag = `${t.plugin}-n${pods}-c${conc}`;
  const dir = path.join(tmpDir, `cni-${tag}`);
  fs.mkdirSync(dir, { recursive: true });
  const names = nets.addMany(Array.from({ length: pods }, (_, i) => `cl-${t.plugin}-c${conc}-${i}`));
  try {
    const jobs: Job[] = names.map((netns, i) => {
      const pod: LabPod = { name: `bench-${i}`, namespace: 'bench', node: 'ctr', netns, containerId: randomBytes(32).toString('hex'), ip: '', labels: { app: 'bench' } };
      const file = path.join(dir, `${i}`);
      fs.writeFileSync(`${file}.add.json`, t.config(pod));
      // Same CNI_ARGS for every plugin (IgnoreUnknown lets ptp accept the Kubernetes keys), as kubelet passes them.
      const args = `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${pod.name};K8S_POD_INFRA_CONTAINER_ID=${pod.containerId}`;
      return { pod, args, in: `${file}.add.json`, out: `${file}.add.out` };
    });
    const add = await timedPass(cnirun, t, 'ADD', jobs, conc, dir);
    // DEL then finds the node as it would be some time after the pods started: on tcx.
    if (t.settle) {
      const s = await t.settle();
      if ('ms' in s) add.settledMs = s.ms;
      else add.unsettled = s.left;
    }
    const delJobs = jobs.map((j, i) => {
      // A failed ADD leaves an error object (with "code") or nothing: DEL then goes without prevResult, as
      // from a runtime that has no cached result.
      let prev: unknown;
      try {
        const r = JSON.parse(fs.readFileSync(j.out, 'utf8')) as unknown;
        prev = r !== null && typeof r === 'object' && !('code' in r) ? r : undefined;
      } catch {
        prev = undefined;
      }
      const file = path.join(dir, `${i}`);
      fs.writeFileSync(`${file}.del.json`, t.config(j.pod, prev));
      return { ...j, in: `${file}.del.json`, out: `${file}.del.out` };
    });
    const del = await timedPass(cnirun, t, 'DEL', delJobs, conc, dir);
    return [add, del];
  } finally {
    nets.delMany(names);
  }
}
