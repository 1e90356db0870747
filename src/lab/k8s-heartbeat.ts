// The lab's kubelet heartbeat (Kubernetes mode): one process per lab, on the host, renewing the kube-node-lease
// Lease of each Node the lab registered (k8s-pods.ts) every 10 s, as a kubelet does, so that the node lifecycle
// controller keeps the lab's Nodes Ready (and their pods Ready) instead of marking them Unknown after its grace
// period. Started by the first pod report (ensureHeartbeat), stopped by lab down (it is recorded as the lab's).
//   node dist/src/lab/k8s-heartbeat.js LAB KUBECONFIG
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { labPaths } from './paths.js';
import { alive } from './procs.js';
import { ownPid } from './owned.js';
import { labRest, renewLease, REGISTERED_BY, RENEW_MS } from './k8s-pods.js';

const SELF = fileURLToPath(import.meta.url);

const pidFile = (lab: string): string => path.join(labPaths(lab).dir, 'k8s-heartbeat.pid');

/** Starts the lab's heartbeat unless it runs. */
export function ensureHeartbeat(lab: string, kubeconfig: string): void {
  const file = pidFile(lab);
  const old = Number(fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : 0);
  if (old > 0 && alive(old)) return;
  const fd = fs.openSync(path.join(labPaths(lab).dir, 'k8s-heartbeat.log'), 'a');
  try {
    const child = spawn(process.execPath, [SELF, lab, kubeconfig], { detached: true, stdio: ['ignore', fd, fd] });
    child.unref();
    if (child.pid === undefined) return;
    ownPid(lab, child.pid);
    fs.writeFileSync(file, String(child.pid));
  } finally {
    fs.closeSync(fd);
  }
}

async function main(lab: string, kubeconfig: string): Promise<void> {
  const rest = labRest(kubeconfig, 5000);
  const state = labPaths(lab).stateFile;
  let failing = false;
  for (;;) {
    if (!fs.existsSync(state)) return; // the lab is gone
    const nodes = (JSON.parse(fs.readFileSync(state, 'utf8')) as { nodes?: Array<{ name: string }> }).nodes ?? [];
    try {
      const list = await rest.request<{ items?: Array<{ metadata?: { name?: string; annotations?: Record<string, string> } }> }>('GET', '/api/v1/nodes');
      const ours = new Set((list.items ?? []).filter((n) => n.metadata?.annotations?.[REGISTERED_BY] === lab).map((n) => n.metadata!.name!));
      for (const n of nodes) if (ours.has(n.name)) await renewLease(rest, n.name);
      if (failing) process.stdout.write(`${new Date().toISOString()} heartbeat: renewing again\n`);
      failing = false;
    } catch (err) {
      if (!failing) process.stdout.write(`${new Date().toISOString()} heartbeat: ${(err as Error).message}; retrying\n`);
      failing = true;
    }
    await new Promise((r) => setTimeout(r, RENEW_MS));
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  const [lab, kubeconfig] = process.argv.slice(2);
  if (!lab || !kubeconfig) {
    process.stderr.write('usage: k8s-heartbeat.js LAB KUBECONFIG\n');
    process.exit(2);
  }
  void main(lab, kubeconfig);
}
