// Egress gateway failover bench (run once, as root): on a three-node lab with an external host, a policy whose
// gateway selector picks w1 or w2; each round SIGKILLs the current gateway's agent and times (a) until the operator
// moves the policy to the other node and (b) until the external host sees the egress IP again from a pod on ctr, then
// brings the agent back (the gateway stays where it moved, so the next round kills the other one). Last, the gateway
// node is deleted (lab node del) once. The baseline is the node lease duration (5 s, src/agent/node-lease.ts): what an
// agent crash must wait for by design.
//   sudo node dist/bench/egress-failover.js [--rounds N]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { execCapture, labDown, labNodeDel, labUp, loadLab, podAdd, restartAgent } from '../src/lab/lab.js';
import { externalAdd } from '../src/lab/outside.js';
import { labEgressApply, labEgressList } from '../src/lab/egress.js';
import { egressPolicyYaml } from '../src/lab/egress-fixtures.js';

const EXT_IP = '192.168.10.200';
const LEASE_MS = 5000;

const POLICY = egressPolicyYaml({ name: 'failover', app: 'egress', destinations: [`${EXT_IP}/32`], gateways: ['w1', 'w2'] });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

async function until(what: string, fn: () => boolean | Promise<boolean>, ms = 90_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await fn())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { rounds: { type: 'string', default: '5' } } });
  const rounds = Number(values.rounds);
  const lab = `bf${process.pid % 100000}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-failover-bench-'));
  await labDown(lab);
  try {
    await labUp({ name: lab, nodes: 3 });
    await externalAdd(lab, 'router', { ip: EXT_IP, serve: [80] });
    const pod = await podAdd(lab, 'a1', { node: 'ctr', labels: { app: 'egress' } });
    const file = path.join(tmp, 'policy.yaml');
    fs.writeFileSync(file, POLICY);
    const [p] = await labEgressApply(lab, file);
    const ip = p!.status.egressIP!;
    const seen = (): string | undefined => /RemoteAddr: ([\d.]+):\d+/.exec(execCapture(pod.netns, ['curl', '-s', '--max-time', '2', `http://${EXT_IP}/`]).stdout)?.[1];
    const gateway = async (): Promise<string | undefined> => (await labEgressList(lab)).find((x) => x.spec.name === 'failover')?.status.gatewayNode;
    const node = (n: string) => loadLab(lab).nodes.find((x) => x.name === n)!;
    await until('the egress IP seen', () => seen() === ip);
    const moved: number[] = [];
    const back: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const from = (await gateway())!;
      const to = from === 'w1' ? 'w2' : 'w1';
      const t0 = performance.now();
      process.kill(node(from).pid, 'SIGKILL');
      await until(`the policy to move to ${to}`, async () => (await gateway()) === to);
      moved.push(performance.now() - t0);
      await until(`the egress IP seen through ${to}`, () => seen() === ip);
      back.push(performance.now() - t0);
      process.stderr.write(`round ${i + 1}: ${from} -> ${to}: moved ${moved.at(-1)!.toFixed(0)} ms, seen again ${back.at(-1)!.toFixed(0)} ms\n`);
      await restartAgent(lab, from);
    }
    const last = (await gateway())!;
    const t1 = performance.now();
    await labNodeDel(lab, last);
    await until('the egress IP seen after the node deletion', async () => (await gateway()) !== last && seen() === ip);
    const deleted = performance.now() - t1;
    const row = (what: string, ms: number): string => `${what.padEnd(44)} ${ms.toFixed(0).padStart(6)} ms   ${(ms / LEASE_MS).toFixed(2)}x`;
    process.stdout.write(
      [
        `egress gateway failover, ${rounds} rounds (medians), 3-node tunnel lab; ratio to the node lease (${LEASE_MS} ms)`,
        `${'event'.padEnd(44)} ${'time'.padStart(9)}   ratio`,
        row('node lease duration (baseline)', LEASE_MS),
        row('agent killed -> operator moved the policy', median(moved)),
        row('agent killed -> external host sees egress IP', median(back)),
        row('gateway node deleted -> external host sees it', deleted),
      ].join('\n') + '\n',
    );
  } finally {
    await labDown(lab);
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`egress failover bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
