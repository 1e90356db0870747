// `npm run demo`: the lab walk of the seed, run for real: three nodes, pods, traffic between them, the views.
// Every step is the `tendril` command a user would type; the labs are removed at the end (--keep leaves them up).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, labPaths, netnsPath } from './paths.js';
import { LAB_MASQ, masqDown, masqWalk } from './demo-masq.js';

const LAB = 'demo';
const LAB_NATIVE = 'demo-native';
const keep = process.argv.includes('--keep');
/** --only-masq: just the masquerading walk (seed "Cilium Networking" §2.1–2.3) on its own lab. */
const onlyMasq = process.argv.includes('--only-masq');
const bin = path.join(REPO_ROOT, 'bin/tendril');

interface RunOpts {
  lab?: string;
  show?: string;
  filter?: (s: string) => string;
}

function run(args: string[], opts: RunOpts = {}): string {
  const lab = opts.lab ?? LAB;
  process.stdout.write(`\n$ ${opts.show ?? `tendril --lab ${lab} ${args.join(' ')}`}\n`);
  const r = spawnSync(bin, ['--lab', lab, ...args], { encoding: 'utf8' });
  const text = (r.stdout ?? '') + (r.stderr ?? '');
  process.stdout.write(opts.filter ? opts.filter(text) : text);
  if (r.status !== 0) throw new Error(`"tendril --lab ${lab} ${args.join(' ')}" failed with exit ${r.status}`);
  return r.stdout ?? '';
}

/** `tendril lab exec POD -- CMD…`, printed as the user types it. */
function exec(pod: string, cmd: string[], lab = LAB): string {
  return run(['lab', 'exec', pod, '--', ...cmd], { lab, show: `tendril --lab ${lab} lab exec ${pod} -- ${cmd.join(' ')}` });
}

/** Like exec(), for a command expected to fail (a connection the policy drops): prints its exit status. */
function execDenied(pod: string, cmd: string[], lab = LAB): void {
  process.stdout.write(`\n$ tendril --lab ${lab} lab exec ${pod} -- ${cmd.join(' ')}\n`);
  const r = spawnSync(bin, ['--lab', lab, 'lab', 'exec', pod, '--', ...cmd], { encoding: 'utf8' });
  process.stdout.write((r.stdout ?? '') + (r.stderr ?? ''));
  if (r.status === 0) throw new Error(`"${cmd.join(' ')}" in ${pod} succeeded, but the policy should drop it`);
  process.stdout.write(`(exit ${r.status}: no answer — dropped by policy)\n`);
}

const WEBPOD_POLICY = `apiVersion: tendril.io/v2
kind: TendrilNetworkPolicy
metadata:
  name: webpod-from-curl
  namespace: default
spec:
  description: "webpods answer HTTP to curl pods only"
  endpointSelector:
    matchLabels:
      app: webpod
  ingress:
  - fromEndpoints:
    - matchLabels:
        app: curl
    toPorts:
    - ports:
      - port: "80"
        protocol: TCP
`;

const SERVER_POLICY = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: server-from-client
  namespace: default
spec:
  podSelector:
    matchLabels:
      app: server
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: client
    ports:
    - protocol: TCP
      port: 80
`;

function section(title: string): void {
  process.stdout.write(`\n## ${title}\n`);
}

function json<T>(args: string[], lab = LAB): T {
  const r = spawnSync(bin, ['--lab', lab, ...args, '-o', 'json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`"tendril ${args.join(' ')} -o json" failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** Shows two VXLAN packets on w1's underlay port while `traffic` runs (tcpdump inside the lab's underlay netns). */
async function captureVxlan(traffic: () => void): Promise<void> {
  const port = labPaths(LAB).node('w1').underlayIf;
  const argv = ['tcpdump', '-i', port, '--immediate-mode', '-nn', '-l', '-c', '2', '-T', 'vxlan', 'udp port 8472'];
  process.stdout.write(`\n$ nsenter --net=${netnsPath(labPaths(LAB).underlayNetns)} ${argv.join(' ')}\n`);
  const child = spawn('nsenter', [`--net=${netnsPath(labPaths(LAB).underlayNetns)}`, '--', ...argv], { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  await new Promise((r) => setTimeout(r, 500));
  traffic();
  await Promise.race([done, new Promise((r) => setTimeout(r, 5000))]);
  child.kill();
  process.stdout.write(out);
}

/** `tendril monitor --related-to ID` on node ctr while `traffic` runs. */
async function captureMonitor(id: number, traffic: () => void): Promise<void> {
  const args = ['--lab', LAB, '--node', 'ctr', 'monitor', '--related-to', String(id)];
  process.stdout.write(`\n$ tendril ${args.join(' ')}\n`);
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'ignore'] });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => child.on('exit', () => r()));
  await new Promise((r) => setTimeout(r, 1500));
  traffic();
  await new Promise((r) => setTimeout(r, 700));
  child.kill('SIGINT');
  await Promise.race([done, new Promise((r) => setTimeout(r, 3000))]);
  process.stdout.write(out);
}

async function main(): Promise<void> {
  if (onlyMasq) {
    masqDown();
    try {
      await masqWalk();
    } finally {
      if (!keep) masqDown();
    }
    return;
  }
  run(['lab', 'down']);
  run(['lab', 'down'], { lab: LAB_NATIVE });
  masqDown();
  try {
    section('A three-node lab: nodes are network namespaces on an underlay bridge; an operator, one agent per node');
    run(['lab', 'up', '--nodes', '3']);
    section('Pods, created by executing the CNI plugin exactly as a container runtime does');
    run(['lab', 'pod', 'add', 'curl-pod', '--node', 'ctr', '--label', 'app=curl']);
    run(['lab', 'pod', 'add', 'webpod-1', '--node', 'w1', '--label', 'app=webpod', '--serve', '80']);
    run(['lab', 'pod', 'add', 'webpod-2', '--node', 'w2', '--label', 'app=webpod', '--serve', '80']);
    run(['lab', 'pod', 'add', 'netshoot-pod', '--node', 'ctr', '--label', 'app=netshoot', '--serve', '8080']);
    run(['lab', 'pod', 'list']);

    section('The seed\'s section 2.2 walk on node ctr');
    run(['--node', 'ctr', 'status', '--verbose']);
    run(['node', 'list']);
    run(['endpoint', 'list']);
    const eps = json<Array<{ id: number; status: { 'external-identifiers': { 'pod-name': string }; networking: { 'interface-name': string } } }>>(['endpoint', 'list']);
    const curl = eps.find((e) => e.status['external-identifiers']['pod-name'] === 'default/curl-pod');
    if (!curl) throw new Error('curl-pod endpoint not found');
    run(['endpoint', 'get', String(curl.id)], {
      filter: (s) => {
        const lines = s.split('\n');
        const i = lines.findIndex((l) => l.includes('"networking"'));
        return lines.slice(i, i + 13).join('\n') + '\n';
      },
    });
    run(['lab', 'node', 'exec', 'ctr', '--', 'ip', '-br', 'addr', 'show'], { show: `tendril --lab ${LAB} lab node exec ctr -- ip -br addr show` });
    // Debian 12's bpftool (7.1) predates tcx, so its `net show` lists nothing; this is the same view from the kernel.
    run(['bpf', 'net', 'show']);
    run(['bpf', 'endpoint', 'list']);
    run(['bpf', 'ipcache', 'list']);
    run(['bpf', 'tunnel', 'list']);
    process.stdout.write(`\n(curl-pod's host-side interface is ${curl.status.networking['interface-name']}: one loaded cil_from_container serves every pod)\n`);

    section('Traffic: same node (bpf_redirect_peer) and across nodes (VXLAN, VNI = source identity)');
    const pods = json<Array<{ name: string; ip: string }>>(['lab', 'pod', 'list']);
    const ipOf = (n: string) => pods.find((p) => p.name === n)!.ip;
    exec('curl-pod', ['ping', '-c', '2', ipOf('netshoot-pod')]);
    exec('curl-pod', ['ping', '-c', '2', ipOf('webpod-1')]);
    exec('curl-pod', ['curl', '-s', `http://${ipOf('webpod-1')}/`]);
    exec('curl-pod', ['curl', '-s', `http://${ipOf('webpod-2')}/`]);
    exec('webpod-2', ['curl', '-s', `http://${ipOf('netshoot-pod')}:8080/`]);
    exec('curl-pod', ['ip', 'route']);
    process.stdout.write(`\ncurl-pod's identity is ${json<Array<{ id: number; status: { identity: { id: number } } }>>(['endpoint', 'list']).find((e) => e.id === curl.id)!.status.identity.id}; on the underlay its packets carry it as the VNI:\n`);
    await captureVxlan(() => {
      spawnSync(bin, ['--lab', LAB, 'lab', 'exec', 'curl-pod', '--', 'ping', '-c', '1', ipOf('webpod-1')]);
    });

    section('Flows, as hubble observe shows them: cluster-wide through the relay');
    run(['observe', '--pod', 'default/curl-pod', '--protocol', 'tcp', '--last', '8']);
    run(['observe', 'nodes']);
    run(['observe', 'status']);
    section('The node\'s monitor (cilium-dbg monitor), related to curl-pod, while it pings webpod-1');
    await captureMonitor(curl.id, () => {
      spawnSync(bin, ['--lab', LAB, 'lab', 'exec', 'curl-pod', '--', 'ping', '-c', '1', ipOf('webpod-1')]);
    });

    section('Identities and network policy: labels -> identities cluster-wide, policy compiled into BPF maps');
    run(['identity', 'list'], { filter: (s) => s.split('\n').filter((l) => !l.includes('namespace.labels.kubernetes.io')).join('\n') });
    run(['ip', 'list']);
    const policyFile = path.join(labPaths(LAB).dir, 'webpod-from-curl.yaml');
    fs.writeFileSync(policyFile, WEBPOD_POLICY);
    process.stdout.write(`\n$ cat ${policyFile}\n${WEBPOD_POLICY}`);
    run(['lab', 'policy', 'apply', policyFile]);
    run(['--node', 'w1', 'endpoint', 'list']);
    exec('curl-pod', ['curl', '-s', '-m', '2', `http://${ipOf('webpod-1')}/`]);
    execDenied('netshoot-pod', ['curl', '-s', '-m', '2', `http://${ipOf('webpod-1')}/`]);
    const w1eps = json<Array<{ id: number; status: { 'external-identifiers': { 'pod-name': string } } }>>(['--node', 'w1', 'endpoint', 'list']);
    const web1 = w1eps.find((e) => e.status['external-identifiers']['pod-name'] === 'default/webpod-1')!;
    run(['--node', 'w1', 'bpf', 'policy', 'get', String(web1.id)]);
    run(['observe', '--verdict', 'DROPPED', '--last', '2']);
    run(['--node', 'w1', 'bpf', 'metrics', 'list']);
    run(['--node', 'ctr', 'bpf', 'ct', 'list', 'global'], { filter: (s) => s.split('\n').filter((l) => l.includes(`${ipOf('webpod-1')}:80`)).slice(0, 4).join('\n') + '\n' });
    process.stdout.write('\nA pod that gets the label app=curl gets curl\'s identity, and the policy lets it in:\n');
    run(['lab', 'pod', 'label', 'netshoot-pod', 'app=curl']);
    exec('netshoot-pod', ['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}\\n', `http://${ipOf('webpod-1')}/`]);
    run(['lab', 'pod', 'label', 'netshoot-pod', 'app=netshoot']);
    run(['lab', 'policy', 'delete', 'webpod-from-curl']);
    exec('netshoot-pod', ['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}\\n', `http://${ipOf('webpod-1')}/`]);

    section('Native routing with etcd as the cluster store');
    run(['lab', 'up', '--nodes', '2', '--routing', 'native', '--store', 'etcd', '--etcd-members', '3', '--pod-cidr', '10.244.0.0/16'], { lab: LAB_NATIVE });
    run(['lab', 'pod', 'add', 'client', '--node', 'ctr', '--label', 'app=client'], { lab: LAB_NATIVE });
    run(['lab', 'pod', 'add', 'other', '--node', 'ctr', '--label', 'app=other'], { lab: LAB_NATIVE });
    run(['lab', 'pod', 'add', 'server', '--node', 'w1', '--label', 'app=server', '--serve', '80'], { lab: LAB_NATIVE });
    const npods = json<Array<{ name: string; ip: string }>>(['lab', 'pod', 'list'], LAB_NATIVE);
    const serverIp = npods.find((p) => p.name === 'server')!.ip;
    exec('client', ['curl', '-s', `http://${serverIp}/`], LAB_NATIVE);
    process.stdout.write('\nA Kubernetes NetworkPolicy; without a tunnel, the receiving node takes the source identity from its ipcache:\n');
    const npFile = path.join(labPaths(LAB_NATIVE).dir, 'server-from-client.yaml');
    fs.writeFileSync(npFile, SERVER_POLICY);
    process.stdout.write(`\n$ cat ${npFile}\n${SERVER_POLICY}`);
    run(['lab', 'policy', 'apply', npFile], { lab: LAB_NATIVE });
    exec('client', ['curl', '-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}\\n', `http://${serverIp}/`], LAB_NATIVE);
    execDenied('other', ['curl', '-s', '-m', '2', `http://${serverIp}/`], LAB_NATIVE);
    run(['status'], { lab: LAB_NATIVE, filter: (s) => s.split('\n').filter((l) => /^(KVStore|Routing|Cluster)/.test(l)).join('\n') + '\n' });
    run(['lab', 'node', 'exec', 'ctr', '--', 'ip', 'route'], { lab: LAB_NATIVE, show: `tendril --lab ${LAB_NATIVE} lab node exec ctr -- ip route` });

    await masqWalk();
  } finally {
    if (!keep) {
      section('Removing the labs');
      run(['lab', 'down']);
      run(['lab', 'down'], { lab: LAB_NATIVE });
      masqDown();
    } else {
      process.stdout.write(`\nLabs "${LAB}", "${LAB_NATIVE}" and "${LAB_MASQ}" left up: tendril --lab ${LAB} status; remove with: tendril --lab ${LAB} lab down\n`);
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
