// Integration (issue #14): an agent killed with -9 in the middle of a CNI ADD leaks nothing for good. The ADD is
// held for real (the cluster store is paused while it allocates the pod's identity, after the address and the
// veth), the agent is killed, and the restarted agent must give back the address, the veth and any endpoint map
// entry no finished endpoint owns, while the pods that finished keep theirs. Root; the lab is the test's own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { savedAllocations, type Allocation } from '../src/agent/ipam.js';
import { hostIfName } from '../src/cni/index.js';
import { Netns } from '../src/kernel/netns/index.js';
import { labDown, labUp, loadLab, pluginConfig, podAdd, restartAgent, type LabPod } from '../src/lab/lab.js';
import { CNI_BIN_DIR, labPaths, NETNS_DIR, netnsPath } from '../src/lab/paths.js';

const LAB = `cr${process.pid % 100000}`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls `fn` until it returns a value other than undefined, within one generous deadline. */
async function until<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await sleep(50);
  }
}

function agentGet<T>(socket: string, p: string): Promise<T> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath: socket, path: p }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => {
          try {
            resolve(JSON.parse(body) as T);
          } catch (err) {
            reject(err as Error);
          }
        });
      })
      .on('error', reject);
  });
}

function links(ns: string): string[] {
  return (JSON.parse(execFileSync('ip', ['-n', ns, '-j', 'link', 'show'], { encoding: 'utf8' })) as { ifname: string }[]).map((l) => l.ifname);
}

function findPin(dir: string, name: string): string | undefined {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isFile() && e.name === name) return p;
    if (e.isDirectory()) {
      const found = findPin(p, name);
      if (found) return found;
    }
  }
  return undefined;
}

/** An endpoint map value (struct endpoint_info, 28 bytes, host order on this little-endian machine). */
function endpointInfoHex(ifindex: number, lxcId: number, ip: string): string[] {
  const b = Buffer.alloc(28);
  b.writeUInt32LE(ifindex, 0);
  b.writeUInt16LE(lxcId, 4);
  b.writeUInt16LE(0, 6);
  Buffer.from('020000000001', 'hex').copy(b, 8);
  Buffer.from('020000000002', 'hex').copy(b, 14);
  b.writeUInt32LE(11001, 20);
  Buffer.from(ip.split('.').map(Number)).copy(b, 24);
  return [...b].map((x) => x.toString(16).padStart(2, '0'));
}

const midNetns = labPaths(LAB).pod('default', 'mid').netns;

before(async () => {
  assert.equal(process.getuid?.(), 0, 'test/cni-restore.test.ts needs root (a lab of its own)');
  await labDown(LAB);
  await labUp({ name: LAB, nodes: 1 });
});

after(async () => {
  const st = fs.existsSync(labPaths(LAB).dir) ? loadLab(LAB) : undefined;
  if (st && alive(st.operatorPid)) process.kill(st.operatorPid, 'SIGCONT');
  if (Netns.exists(midNetns, NETNS_DIR)) Netns.delete(midNetns, NETNS_DIR);
  await labDown(LAB);
});

test('kill -9 during a CNI ADD: the restarted agent gives back its address, veth and map entry; DEL then succeeds', async () => {
  const st = loadLab(LAB);
  const node = st.nodes[0]!;
  const np = labPaths(LAB).node(node.name);
  await podAdd(LAB, 'done', { node: node.name, labels: { app: 'done' } });

  // The interrupted ADD: a pod with labels no identity exists for yet, while the store does not answer.
  Netns.create(midNetns, NETNS_DIR).close();
  const mid: LabPod = { name: 'mid', namespace: 'default', node: node.name, netns: midNetns, containerId: randomBytes(32).toString('hex'), ip: '', labels: { app: `mid-${process.pid}` } };
  const env = {
    PATH: process.env['PATH'] ?? '/usr/sbin:/usr/bin:/sbin:/bin',
    CNI_CONTAINERID: mid.containerId,
    CNI_NETNS: netnsPath(midNetns),
    CNI_IFNAME: 'eth0',
    CNI_PATH: CNI_BIN_DIR,
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=mid`,
  };
  const hostName = hostIfName(mid.containerId, 'eth0');
  const ipamFile = path.join(np.stateDir, 'ipam.json');
  const allocations = (): Allocation[] => savedAllocations(ipamFile);
  process.kill(st.operatorPid, 'SIGSTOP');
  let shimOut = '';
  const shim = spawn(path.join(CNI_BIN_DIR, 'tendril-cni'), [], { env: { ...env, CNI_COMMAND: 'ADD' } });
  shim.stdout.on('data', (d: Buffer) => (shimOut += d.toString()));
  const shimExit = new Promise<number | null>((r) => shim.on('exit', r));
  shim.stdin.end(pluginConfig(LAB, mid));
  let midIp: string;
  try {
    midIp = await until('the ADD holding an address and a veth', () => {
      const a = allocations().find((x) => x.containerId === mid.containerId);
      return a && links(node.netns).includes(hostName) ? a.ip : undefined;
    });
    process.kill(node.pid, 'SIGKILL');
    await until('the agent gone', () => (alive(node.pid) ? undefined : true));
  } finally {
    process.kill(st.operatorPid, 'SIGCONT');
  }
  const status = (): Promise<{ code: number | null; out: string }> =>
    new Promise((resolve) => {
      const c = spawn(path.join(CNI_BIN_DIR, 'tendril-cni'), [], { env: { PATH: env.PATH, CNI_COMMAND: 'STATUS', CNI_PATH: CNI_BIN_DIR } });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('exit', (code) => resolve({ code, out }));
      c.stdin.end(pluginConfig(LAB, mid));
    });
  const down = await status();
  assert.equal((JSON.parse(down.out) as { code: number }).code, 50, `STATUS with the agent dead: ${down.out}`);
  assert.equal(await shimExit, 1);
  assert.equal((JSON.parse(shimOut) as { code: number }).code, 11, `a dead agent is "try again later": ${shimOut}`);

  // More of what a crash can leave: an allocation of an older agent (no attachment recorded) and an endpoint
  // map entry written for a veth whose endpoint was never saved.
  const ipam = { cidr: (JSON.parse(fs.readFileSync(ipamFile, 'utf8')) as { cidr: string }).cidr, allocations: allocations() };
  const prefix = ipam.cidr.split('.').slice(0, 3).join('.');
  const legacyIp = `${prefix}.250`;
  const strayIp = `${prefix}.251`;
  ipam.allocations.push({ ip: legacyIp, owner: 'default/old' });
  // And the converse: a state file that lost the address of a pod that runs.
  const doneIp = loadLab(LAB).pods.find((p) => p.name === 'done')!.ip;
  ipam.allocations = ipam.allocations.filter((a) => a.ip !== doneIp);
  // Written as the whole state: a snapshot without a journal of changes since.
  fs.writeFileSync(ipamFile, JSON.stringify(ipam));
  fs.rmSync(`${ipamFile}.journal`, { force: true });
  execFileSync('ip', ['-n', node.netns, 'link', 'add', 'lxcstray0', 'type', 'veth', 'peer', 'name', 'lxcstray0p']);
  const strayIfindex = (JSON.parse(execFileSync('ip', ['-n', node.netns, '-j', 'link', 'show', 'lxcstray0'], { encoding: 'utf8' })) as { ifindex: number }[])[0]!.ifindex;
  const lxcPin = findPin(np.bpfRoot, 'tendril_lxc');
  assert.ok(lxcPin, `tendril_lxc pinned under ${np.bpfRoot}`);
  execFileSync('bpftool', ['map', 'update', 'pinned', lxcPin, 'key', 'hex', ...Buffer.from(strayIp.split('.').map(Number)).toString('hex').match(/../g)!, 'value', 'hex', ...endpointInfoHex(strayIfindex, 4000, strayIp)]);

  await restartAgent(LAB, node.name);
  const after = allocations();
  assert.deepEqual(after.filter((a) => [midIp, legacyIp].includes(a.ip)), [], 'the interrupted ADD\'s and the legacy address are free again');
  const done = loadLab(LAB).pods.find((p) => p.name === 'done')!;
  assert.ok(after.some((a) => a.ip === done.ip && a.owner === 'default/done' && a.containerId === done.containerId), 'the finished pod has its address (re-recorded)');
  const nodeLinks = links(node.netns);
  assert.ok(!nodeLinks.includes(hostName), `veth ${hostName} of the interrupted ADD is gone`);
  assert.ok(!nodeLinks.includes('lxcstray0'), 'the stray veth is gone');
  assert.ok(nodeLinks.includes(hostIfName(done.containerId, 'eth0')), 'the finished pod keeps its veth');
  const lxc = await agentGet<{ ip4: string }[]>(node.socket, '/v1/map/tendril_lxc');
  assert.deepEqual(lxc.filter((e) => [midIp, strayIp].includes(e.ip4)), [], 'no endpoint map entry without an endpoint');
  assert.ok(lxc.some((e) => e.ip4 === done.ip));
  const eps = await agentGet<{ id: number }[]>(node.socket, '/v1/endpoint');
  assert.equal(eps.length, 2, 'the finished pod and the health endpoint');

  // Ready and synced with the cluster again: STATUS promises ADDs.
  let last = '';
  await until('STATUS 0 after the restart', async () => {
    const r = await status();
    last = r.out;
    return r.code === 0 ? true : undefined;
  }).catch((err: Error) => {
    throw new Error(`${err.message}; STATUS said ${last}`);
  });

  // The runtime's DEL of the failed ADD: success, nothing left to do.
  const del = await new Promise<number | null>((resolve) => {
    const c = spawn(path.join(CNI_BIN_DIR, 'tendril-cni'), [], { env: { ...env, CNI_COMMAND: 'DEL' }, stdio: ['pipe', 'ignore', 'inherit'] });
    c.on('exit', resolve);
    c.stdin.end(pluginConfig(LAB, mid));
  });
  assert.equal(del, 0);
});
