// The demo's walk of seed "Cilium Networking" §2.1–2.3 (masquerading): a router VM on the node network that is not
// in the cluster, a network 10.0.0.0/16 behind it, what the router and the far host see of pod traffic with and
// without masquerading. Every step is the `tendril` command a user would type, run for real.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT, labPaths, netnsPath } from './paths.js';
import { loadLab } from './lab.js';

export const LAB_MASQ = 'demo-masq';
const bin = path.join(REPO_ROOT, 'bin/tendril');
const ROUTER = '192.168.10.200';
const FAR = '10.0.1.10';

function run(args: string[], o: { show?: string; filter?: (s: string) => string; mayFail?: string } = {}): { ok: boolean; out: string } {
  process.stdout.write(`\n$ ${o.show ?? `tendril --lab ${LAB_MASQ} ${args.join(' ')}`}\n`);
  const r = spawnSync(bin, ['--lab', LAB_MASQ, ...args], { encoding: 'utf8' });
  const text = (r.stdout ?? '') + (r.stderr ?? '');
  process.stdout.write(o.filter ? o.filter(text) : text);
  if (r.status !== 0 && o.mayFail === undefined) throw new Error(`"tendril --lab ${LAB_MASQ} ${args.join(' ')}" failed with exit ${r.status}`);
  if (r.status !== 0) process.stdout.write(`(exit ${r.status}: ${o.mayFail})\n`);
  return { ok: r.status === 0, out: r.stdout ?? '' };
}

function exec(pod: string, cmd: string[], mayFail?: string): { ok: boolean; out: string } {
  const shown = cmd.map((a) => (/\s/.test(a) ? `'${a}'` : a)).join(' ');
  return run(['lab', 'exec', pod, '--', ...cmd], { show: `tendril --lab ${LAB_MASQ} lab exec ${pod} -- ${shown}`, ...(mayFail !== undefined ? { mayFail } : {}) });
}

/** The source address a web server's answer says it saw. */
function seen(answer: string): string {
  return /RemoteAddr: ([\d.]+)/.exec(answer)?.[1] ?? 'nothing';
}

/** tcpdump on an outside host's eth0 (inside its namespace) while `traffic` runs: the first two ICMP packets. */
async function captureOn(ns: string, host: string, traffic: () => void): Promise<void> {
  const argv = ['tcpdump', '-i', 'eth0', '--immediate-mode', '-nn', '-l', '-c', '2', 'icmp'];
  process.stdout.write(`\n$ tendril --lab ${LAB_MASQ} lab external exec ${host} -- ${argv.join(' ')}\n`);
  const child = spawn('nsenter', [`--net=${netnsPath(ns)}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  await new Promise((r) => setTimeout(r, 700));
  traffic();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise((r) => (timer = setTimeout(r, 5000)))]);
  clearTimeout(timer);
  child.kill();
  process.stdout.write(out);
}

function section(title: string): void {
  process.stdout.write(`\n## ${title}\n`);
}

function say(line: string): void {
  process.stdout.write(`\n${line}\n`);
}

export async function masqWalk(): Promise<void> {
  section('Beyond the cluster (seed "Cilium Networking" §2): a two-node lab and a router VM on the node network');
  run(['lab', 'up', '--nodes', '2']);
  run(['lab', 'external', 'add', 'router', '--ip', ROUTER, '--serve', '80']);
  run(['lab', 'pod', 'add', 'curl-pod', '--node', 'ctr', '--label', 'app=curl']);
  run(['lab', 'pod', 'add', 'webpod', '--node', 'w1', '--label', 'app=webpod', '--serve', '80']);
  const pods = loadLab(LAB_MASQ).pods;
  const curlIp = pods.find((p) => p.name === 'curl-pod')!.ip;
  const webIp = pods.find((p) => p.name === 'webpod')!.ip;
  run(['status'], { filter: (s) => s.split('\n').filter((l) => /^(Routing|Masquerading)/.test(l)).join('\n') + '\n' });

  section('§2.1 A VM on the cluster\'s network that did not join it: pod traffic leaves with the node\'s IP');
  const r1 = exec('curl-pod', ['curl', '-s', `http://${ROUTER}/`]);
  say(`The router saw ${seen(r1.out)} (node ctr), not curl-pod's ${curlIp}: masqueraded in cil_to_netdev, the answer reverse-translated in cil_from_netdev.`);
  await captureOn(labPaths(LAB_MASQ).netnsPrefix + 'ext-router', 'router', () => {
    spawnSync(bin, ['--lab', LAB_MASQ, 'lab', 'exec', 'curl-pod', '--', 'ping', '-c', '1', ROUTER]);
  });
  exec('curl-pod', ['sh', '-c', `echo hello | timeout 3 socat - UDP:${ROUTER}:80`], 'no UDP answer');
  run(['--node', 'ctr', 'bpf', 'nat', 'list'], { mayFail: 'no bpf nat list in this build' });
  const r2 = exec('curl-pod', ['curl', '-s', `http://${webIp}/`]);
  say(`Inside the cluster nothing is translated: webpod saw ${seen(r2.out)} (curl-pod itself).`);

  section('§2.2 A network behind the router (10.0.0.0/16): the nodes route it via the router, pods reach it masqueraded');
  run(['lab', 'network', 'add', 'far', '--cidr', '10.0.0.0/16', '--via', 'router', '--host', FAR, '--serve', '80']);
  run(['lab', 'node', 'exec', 'ctr', '--', 'ip', 'route'], { show: `tendril --lab ${LAB_MASQ} lab node exec ctr -- ip route` });
  const r3 = exec('curl-pod', ['curl', '-s', `http://${FAR}/`]);
  say(`The far host saw ${seen(r3.out)}: the router only ever sees node addresses, and needs no route to the pods.`);

  section('§2.3 No masquerading towards 10.0.0.0/16 (ip-masq-agent): the far network sees pod IPs, once the router routes them back');
  run(['lab', 'masq', 'set', '--non-masquerade-cidr', FAR.replace(/\.1\.10$/, '.0.0') + '/16']);
  run(['--node', 'ctr', 'bpf', 'ipmasq', 'list'], { mayFail: 'no bpf ipmasq list in this build' });
  exec('curl-pod', ['curl', '-s', '-m', '3', `http://${FAR}/`], 'no answer: the far host answers 172.20.0.x, and the router has no route to the pod CIDRs');
  say('The router learns every node\'s pod CIDR via that node (what --route-back sets up):');
  run(['lab', 'network', 'del', 'far']);
  run(['lab', 'network', 'add', 'far', '--cidr', '10.0.0.0/16', '--via', 'router', '--host', FAR, '--serve', '80', '--route-back']);
  run(['lab', 'external', 'exec', 'router', '--', 'ip', 'route']);
  const r4 = exec('curl-pod', ['curl', '-s', `http://${FAR}/`]);
  say(`The far host saw ${seen(r4.out)}: curl-pod's own address. The router itself is not in the set:`);
  const r5 = exec('curl-pod', ['curl', '-s', `http://${ROUTER}/`]);
  say(`it still sees ${seen(r5.out)}.`);
  await worldWalk();
}

/** A web server's answer as one line: who answered, and the source address it saw. */
function whoSaw(answer: string): string {
  const host = /Hostname: (\S+)/.exec(answer)?.[1];
  return host ? `Hostname: ${host}  RemoteAddr: ${seen(answer)}\n` : answer;
}

/** Polls `lab service list` until the service has its LoadBalancer IP (LB IPAM runs in the operator). */
async function externalIp(name: string): Promise<string> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const r = spawnSync(bin, ['--lab', LAB_MASQ, 'lab', 'service', 'list'], { encoding: 'utf8' });
    const row = (r.stdout ?? '').split('\n').find((l) => l.split(/\s+/)[1] === name);
    const ip = row?.split(/\s+/)[4] ?? '';
    if (/^\d+\.\d+\.\d+\.\d+$/.test(ip)) return ip;
    if (Date.now() > deadline) throw new Error(`service ${name} got no LoadBalancer IP within 20 s: ${row ?? '(not listed)'}`);
    await new Promise((res) => setTimeout(res, 250));
  }
}

/** The other direction: the router reaches pods through a NodePort and a LoadBalancer IP announced on L2. */
async function worldWalk(): Promise<void> {
  section('The world reaches the pods: a NodePort, and a LoadBalancer IP from an IP pool announced by ARP in BPF (seed §1.1, §3.4)');
  run(['lab', 'pod', 'add', 'webpod-2', '--node', 'ctr', '--label', 'app=webpod', '--serve', '80']);
  run(['lab', 'lb-pool', 'add', 'lan', '--start', '192.168.10.240', '--stop', '192.168.10.241']);
  const added = run(['lab', 'service', 'add', 'web', '--selector', 'app=webpod', '--port', '80:80/TCP', '--type', 'LoadBalancer']);
  const nodePort = /node ports (\d+)/.exec(added.out)?.[1];
  if (!nodePort) throw new Error(`no node port in: ${added.out}`);
  const lbIp = await externalIp('web');
  run(['lab', 'service', 'list']);
  run(['--node', 'ctr', 'service', 'list']);
  const fetch = (url: string): void => {
    for (let i = 0; i < 4; i++) {
      run(['lab', 'external', 'exec', 'router', '--', 'curl', '-s', '--retry', '5', '--retry-connrefused', '-m', '3', url], { filter: whoSaw });
    }
  };
  fetch(`http://192.168.10.101:${nodePort}/`);
  say('Through w1\'s node port: webpod (on w1) sees the router itself, webpod-2 (on ctr) sees w1 — SNAT to the node IP (externalTrafficPolicy Cluster).');
  fetch(`http://${lbIp}/`);
  run(['--node', 'ctr', 'bpf', 'l2', 'list']);
  run(['lab', 'external', 'exec', 'router', '--', 'ip', 'neigh', 'show', lbIp]);
  say(`One node holds the lease for ${lbIp} and answers ARP for it from cil_from_netdev; the router's neighbour entry is that node's MAC.`);
}

export function masqDown(): void {
  run(['lab', 'down']);
}
