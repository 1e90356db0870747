// Where the node proxy's time goes under the L7 bench's keep-alive load (client -> server on another node, tunnel,
// the L7 rule): per process CPU µs per request (l7-cpu.ts), the proxy's syscalls per request (`strace -c -f -p`,
// a separate run: strace slows what it traces) and its V8 CPU profile (`--cpu-prof` through
// TENDRIL_PROXY_NODE_FLAGS) as self time per function. Diagnostic, not a target: figures depend on the box's load.
//   node dist/bench/l7-profile.js [--secs 8] [--conc 8] [--policy l7|l4] [--no-strace] [--no-prof] [--keep DIR]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { labDown, loadLab } from '../src/lab/lab.js';
import { applyPolicy, l7Lab, status, type L7Policy } from './l7.js';
import type { LoadResult } from './l7-load.js';
import { cpuSnapshot, perRequest, proxyPidOf, type CpuRole } from './l7-cpu.js';
import { inNs, runAsync, sleep } from './proc.js';

const LOAD_JS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'l7-load.js');
const { values } = parseArgs({
  options: {
    secs: { type: 'string', default: '8' },
    conc: { type: 'string', default: '8' },
    policy: { type: 'string', default: 'l7' },
    'no-strace': { type: 'boolean', default: false },
    'no-prof': { type: 'boolean', default: false },
    keep: { type: 'string' },
  },
});
const secs = Number(values.secs);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** Self time per function (ms) of a .cpuprofile, largest first. */
export function selfTimes(profile: { nodes: ProfileNode[]; startTime: number; endTime: number; samples: number[] }): { name: string; ms: number; share: number }[] {
  const total = profile.samples.length;
  const per = (profile.endTime - profile.startTime) / 1000 / Math.max(1, total);
  const by = new Map<string, number>();
  for (const n of profile.nodes) {
    const f = n.callFrame;
    const where = f.url ? `${path.basename(f.url)}:${f.lineNumber + 1}` : '';
    const name = `${f.functionName || '(anonymous)'} ${where}`.trim();
    by.set(name, (by.get(name) ?? 0) + (n.hitCount ?? 0));
  }
  return [...by.entries()].map(([name, hits]) => ({ name, ms: hits * per, share: hits / Math.max(1, total) })).sort((a, b) => b.ms - a.ms);
}

/** The summary table of `strace -c` (the lines of its report). */
function straceSummary(text: string): string[] {
  return text.split('\n').filter((l) => /^\s*[0-9.]+\s+[0-9.]+\s+\d+\s+\d+/.test(l) || /total/.test(l));
}

async function load(netns: string, url: string): Promise<LoadResult> {
  const args = ['--url', url, '--mode', 'keepalive', '--secs', String(secs), '--conc', values.conc!];
  const done = await runAsync(inNs(netns, [process.execPath, LOAD_JS, ...args]), { timeoutMs: (secs + 60) * 1000 });
  return JSON.parse(done.stdout.trim().split('\n').pop()!) as LoadResult;
}

async function main(): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-l7-prof-'));
  const profDir = path.join(tmp, 'prof');
  fs.mkdirSync(profDir);
  if (!values['no-prof']) process.env['TENDRIL_PROXY_NODE_FLAGS'] = `--cpu-prof --cpu-prof-dir=${profDir}`;
  const lab = `l7p${process.pid % 100000}`;
  try {
    const { nodes, web, client } = await l7Lab(lab);
    const policy = values.policy as L7Policy;
    await applyPolicy(lab, tmp, policy, client.netns, web.ip, 'l7-profile');
    const st = loadLab(lab);
    const agentOf = (node: string): number => st.nodes.find((n) => n.name === node)!.pid;
    const proxy = policy === 'l7' ? proxyPidOf(agentOf(nodes[1]!)) : undefined;
    if (policy === 'l7' && proxy === undefined) throw new Error('l7-profile: no proxy process under the server agent');
    const pids: Partial<Record<CpuRole, number>> = { 'client agent': agentOf(nodes[0]!), 'server agent': agentOf(nodes[1]!), server: web.serve!.pid, ...(proxy ? { proxy } : {}) };
    const url = `http://${web.ip}/public`;
    // 1. CPU per request per process, nothing attached.
    const before = cpuSnapshot(pids);
    const r = await load(client.netns, url);
    const cpu = perRequest(before, cpuSnapshot(pids), r.requests);
    if (r.cpuUs !== undefined) cpu.client = r.cpuUs / r.requests;
    console.log(`keep-alive ${policy}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50ms.toFixed(2)} ms, p99 ${r.p99ms.toFixed(2)} ms, ${r.errors} error(s); load average ${os.loadavg()[0]!.toFixed(2)}`);
    console.log(`CPU µs per request: ${Object.entries(cpu).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}`);
    // 2. Syscalls of the proxy per request.
    if (proxy !== undefined && !values['no-strace']) {
      const out = path.join(tmp, 'strace.txt');
      const s = spawn('strace', ['-c', '-f', '-o', out, '-p', String(proxy)], { stdio: 'ignore' });
      await sleep(500);
      const rs = await load(client.netns, url);
      s.kill('SIGINT');
      await new Promise((res) => s.once('exit', res));
      console.log(`under strace: ${rs.rps.toFixed(0)} req/s (${rs.requests} requests); proxy syscalls:`);
      for (const l of straceSummary(fs.readFileSync(out, 'utf8'))) {
        const calls = Number(l.trim().split(/\s+/)[3]);
        console.log(`  ${l.trim()}   ${Number.isFinite(calls) ? `(${(calls / rs.requests).toFixed(2)}/req)` : ''}`);
      }
    }
    // 3. The proxy's CPU profile: a run, then SIGTERM (the proxy exits and writes it; the supervisor restarts it).
    if (proxy !== undefined && !values['no-prof']) {
      // A fresh proxy (the first one's profile, of the runs above, is set aside), so the profile is of this run.
      const profiles = async (n: number): Promise<string[]> => {
        const until = Date.now() + 30_000;
        let got: string[] = [];
        while (Date.now() < until && (got = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'))).length < n) await sleep(200);
        if (got.length < n) throw new Error('l7-profile: the proxy wrote no CPU profile');
        return got;
      };
      process.kill(proxy, 'SIGTERM');
      const first = await profiles(1);
      let fresh: number | undefined;
      const until = Date.now() + 30_000;
      while ((fresh = proxyPidOf(agentOf(nodes[1]!))) === undefined || fresh === proxy || (await status(client.netns, `http://${web.ip}/private`)) !== 403) {
        if (Date.now() > until) throw new Error('l7-profile: the proxy did not come back');
        await sleep(200);
      }
      const rp = await load(client.netns, url);
      process.kill(fresh, 'SIGTERM');
      const file = (await profiles(2)).find((f) => !first.includes(f));
      if (file === undefined) throw new Error('l7-profile: the proxy wrote no CPU profile');
      await sleep(500);
      const prof = JSON.parse(fs.readFileSync(path.join(profDir, file), 'utf8')) as Parameters<typeof selfTimes>[0];
      if (values.keep) {
        fs.mkdirSync(values.keep, { recursive: true });
        fs.copyFileSync(path.join(profDir, file), path.join(values.keep, 'proxy.cpuprofile'));
      }
      console.log(`profiled run: ${rp.rps.toFixed(0)} req/s (${rp.requests} requests); proxy self time, top 30 (ms and µs per request of the run; the process's start is in it):`);
      for (const t of selfTimes(prof).slice(0, 30)) console.log(`  ${(t.share * 100).toFixed(1).padStart(5)} %  ${t.ms.toFixed(0).padStart(6)} ms  ${((t.ms * 1000) / rp.requests).toFixed(1).padStart(6)} µs/req  ${t.name}`);
    }
  } finally {
    await labDown(lab);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
