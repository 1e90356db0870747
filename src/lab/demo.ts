// `npm run demo`: the lab walk of the seed, run for real: three nodes, pods, traffic between them, the views.
// Every step is the `tendril` command a user would type; the lab is removed at the end (--keep leaves it up).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { REPO_ROOT } from './paths.js';

const LAB = 'demo';
const keep = process.argv.includes('--keep');
const bin = path.join(REPO_ROOT, 'bin/tendril');

function run(args: string[], opts: { show?: string; allowFail?: boolean; filter?: (s: string) => string } = {}): string {
  process.stdout.write(`\n$ ${opts.show ?? `tendril --lab ${LAB} ${args.join(' ')}`}\n`);
  const r = spawnSync(bin, ['--lab', LAB, ...args], { encoding: 'utf8' });
  const text = (r.stdout ?? '') + (r.stderr ?? '');
  process.stdout.write(opts.filter ? opts.filter(text) : text);
  if (r.status !== 0 && !opts.allowFail) throw new Error(`"tendril ${args.join(' ')}" failed with exit ${r.status}`);
  return r.stdout ?? '';
}

function section(title: string): void {
  process.stdout.write(`\n## ${title}\n`);
}

async function main(): Promise<void> {
  run(['lab', 'down']);
  try {
    section('A three-node lab: nodes are network namespaces on an underlay bridge, one agent each');
    run(['lab', 'up', '--nodes', '3']);
    section('Pods, created by executing the CNI plugin exactly as a container runtime does');
    run(['lab', 'pod', 'add', 'curl-pod', '--node', 'ctr', '--label', 'app=curl']);
    run(['lab', 'pod', 'add', 'webpod-1', '--node', 'ctr', '--label', 'app=webpod', '--serve', '80']);
    run(['lab', 'pod', 'add', 'webpod-2', '--node', 'w1', '--label', 'app=webpod', '--serve', '80']);
    run(['lab', 'pod', 'add', 'netshoot-pod', '--node', 'w1', '--label', 'app=netshoot']);
    run(['lab', 'pod', 'list']);
    run(['lab', 'status']);

    section('The seed\'s section 2.2 walk on node ctr');
    run(['--node', 'ctr', 'status', '--verbose']);
    run(['endpoint', 'list']);
    const eps = JSON.parse(run(['endpoint', 'list', '-o', 'json'], { filter: () => '(json)\n' })) as Array<{
      id: number;
      status: { networking: { addressing: Array<{ ipv4: string }>; 'interface-name': string }; 'external-identifiers': { 'pod-name': string } };
    }>;
    const curl = eps.find((e) => e.status['external-identifiers']['pod-name'] === 'default/curl-pod');
    if (!curl) throw new Error('curl-pod endpoint not found');
    run(['endpoint', 'get', String(curl.id)], {
      filter: (s) => {
        const lines = s.split('\n');
        const i = lines.findIndex((l) => l.includes('"networking"'));
        return lines.slice(i, i + 13).join('\n') + '\n';
      },
    });
    const ifname = curl.status.networking['interface-name'];
    run(['lab', 'node', 'exec', 'ctr', '--', 'ip', '-br', 'addr', 'show'], { show: `tendril --lab ${LAB} lab node exec ctr -- ip -br addr show` });
    // Debian 12's bpftool (7.1) predates tcx, so its `net show` lists nothing; this is the same view from the kernel.
    run(['--node', 'ctr', 'bpf', 'net', 'show']);
    run(['bpf', 'endpoint', 'list']);
    process.stdout.write(`\n(curl-pod's host-side interface is ${ifname}: cil_from_container on tcx ingress, cil_to_container on tcx egress)\n`);

    section('Traffic between pods on the same node: eBPF redirect straight into the peer namespace');
    const pods = JSON.parse(run(['lab', 'pod', 'list', '-o', 'json'], { filter: () => '(json)\n' })) as Array<{ name: string; ip: string }>;
    const ipOf = (n: string) => pods.find((p) => p.name === n)!.ip;
    run(['lab', 'exec', 'curl-pod', '--', 'ping', '-c', '3', ipOf('webpod-1')], { show: `tendril --lab ${LAB} lab exec curl-pod -- ping -c 3 ${ipOf('webpod-1')}` });
    run(['lab', 'exec', 'curl-pod', '--', 'curl', '-s', `http://${ipOf('webpod-1')}/`], { show: `tendril --lab ${LAB} lab exec curl-pod -- curl -s http://${ipOf('webpod-1')}/` });
    run(['lab', 'exec', 'netshoot-pod', '--', 'curl', '-s', `http://${ipOf('webpod-2')}/`], { show: `tendril --lab ${LAB} lab exec netshoot-pod -- curl -s http://${ipOf('webpod-2')}/` });
    run(['lab', 'exec', 'curl-pod', '--', 'ip', 'route'], { show: `tendril --lab ${LAB} lab exec curl-pod -- ip route` });
    process.stdout.write('\nCross-node traffic (tunnel/native routing) and flows (tendril observe) come with the next issues.\n');
  } finally {
    if (!keep) {
      section('Removing the lab');
      run(['lab', 'down']);
    } else {
      process.stdout.write(`\nLab "${LAB}" left up: tendril --lab ${LAB} status; remove with: tendril lab down --name ${LAB}\n`);
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
