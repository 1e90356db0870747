// A lab in Kubernetes mode (`labUp({ kubeconfig })`): the apiserver listens on the host's 127.0.0.1, which the
// lab's namespaces cannot reach (they have no link to the host). As the kit does for its node, one socat on the
// host serves a unix socket that connects to the apiserver, and one socat per namespace listens on that
// namespace's 127.0.0.1:PORT and connects to the socket: only loopback and a unix socket cross the boundary, and
// the admin kubeconfig works unchanged inside.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { LabError } from './errors.js';
import { ownPid } from './owned.js';
import { spawnInNetns } from './procs.js';

/** The apiserver port of a kubeconfig whose server is https://127.0.0.1:PORT (the kit's). */
export function apiserverPort(kubeconfig: string): number {
  let server = '';
  try {
    const kc = parse(fs.readFileSync(kubeconfig, 'utf8')) as { clusters?: Array<{ cluster?: { server?: string } }> };
    server = kc.clusters?.[0]?.cluster?.server ?? '';
  } catch (err) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot read --k8s-kubeconfig ${kubeconfig}: ${(err as Error).message}`);
  }
  const m = /^https?:\/\/127\.0\.0\.1:(\d+)\/?$/.exec(server);
  if (!m) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Kubeconfig ${kubeconfig} names server "${server}": the lab bridges only an apiserver on https://127.0.0.1:PORT`);
  return Number(m[1]);
}

/** Starts the bridges (every process recorded as the lab's, so lab down stops them). */
export async function bridgeApiserver(lab: string, dir: string, kubeconfig: string, netnses: string[]): Promise<void> {
  const port = apiserverPort(kubeconfig);
  const sock = path.join(dir, 'apiserver.sock');
  fs.rmSync(sock, { force: true });
  const log = path.join(dir, 'apiserver-bridge.log');
  const fd = fs.openSync(log, 'a');
  try {
    const host = spawn('socat', [`UNIX-LISTEN:${sock},fork,mode=600`, `TCP:127.0.0.1:${port}`], { detached: true, stdio: ['ignore', fd, fd] });
    host.unref();
    ownPid(lab, host.pid!);
  } finally {
    fs.closeSync(fd);
  }
  const deadline = Date.now() + 10_000;
  while (!fs.existsSync(sock)) {
    if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `The apiserver bridge did not start: see ${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  for (const ns of netnses) bridgeApiserverInto(lab, dir, kubeconfig, ns);
}

/** The netns end of the bridge for one more namespace (a node added later), to the host end bridgeApiserver started. */
export function bridgeApiserverInto(lab: string, dir: string, kubeconfig: string, netns: string): void {
  const port = apiserverPort(kubeconfig);
  const sock = path.join(dir, 'apiserver.sock');
  const log = path.join(dir, 'apiserver-bridge.log');
  ownPid(lab, spawnInNetns(netns, ['socat', `TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr`, `UNIX-CONNECT:${sock}`], log));
}
