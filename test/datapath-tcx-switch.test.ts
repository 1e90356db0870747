// Integration (root): the switch of CNI-path pods from their tc filter to a pinned tcx link, with the datapath in a
// process of its own inside a node namespace (`ip netns exec`, as the agent runs): no switch while a CNI call is in
// flight, then every pod switched with the attach on a libuv thread, the filters gone, traffic still forwarded; an
// endpoint removed while bridged is not switched. The child (this file with TDLT_TCX_CHILD set) takes one JSON
// command per stdin line and answers one JSON line. Every namespace and bpffs directory is the test's own and goes in
// after(), also on failure.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { exec, inNs, sleep, until } from './lib/proc.js';
import { NodeDatapath, wirePodInterface, type DatapathEndpoint } from '../src/datapath/index.js';
import { Netlink } from '../src/kernel/netlink/index.js';
import { Netns } from '../src/kernel/netns/index.js';

const HERE = fileURLToPath(import.meta.url);
const root = fileURLToPath(new URL('../../', import.meta.url));
const SUBNET = '10.233.0';
const QUIET_MS = 300;

interface Command {
  cmd: 'add' | 'hold' | 'release' | 'stats' | 'attachments' | 'pins' | 'remove' | 'stop';
  host?: number;
}

/** The child: a NodeDatapath started in the namespace the whole process runs in. */
async function child(cfg: { prefix: string; bpfRoot: string }): Promise<void> {
  const dp = new NodeDatapath({
    podCidr: `${SUBNET}.0/24`, routerIP: `${SUBNET}.1`, nodeIP: '192.168.91.10', nativeDev: 'eth0',
    bpfRoot: cfg.bpfRoot, objDir: path.join(root, 'build/bpf'), tcxSwitchQuietMs: QUIET_MS,
  });
  dp.start();
  const eps = new Map<number, DatapathEndpoint>();
  const holds: Array<() => void> = [];
  const handle = async (c: Command): Promise<unknown> => {
    switch (c.cmd) {
      case 'add': {
        const host = c.host!;
        // Made by the parent before this process started (`ip netns exec` gave it a mount namespace of its own).
        const podNs = Netns.open(`/var/run/netns/${cfg.prefix}-p${host}`);
        try {
          const link = wirePodInterface({ netns: podNs, netnsPath: podNs.path, hostIfName: `lxcts${host}`, podIfName: 'eth0', ip: `${SUBNET}.${host}`, routerIP: `${SUBNET}.1`, mtu: dp.podMtu });
          const ep: DatapathEndpoint = { id: host, ip: `${SUBNET}.${host}`, hostIfName: `lxcts${host}`, hostIfindex: link.hostIfindex, hostMac: link.hostMac, podMac: link.podMac, identity: 13000 + host };
          await dp.addEndpointAsync(ep);
          eps.set(host, ep);
        } finally {
          podNs.close();
        }
        return {};
      }
      case 'hold':
        holds.push(dp.holdTcxSwitch());
        return {};
      case 'release':
        holds.shift()?.();
        return {};
      case 'stats':
        return dp.tcxSwitchStats();
      case 'attachments':
        return dp.attachments().filter((a) => a.ifname.startsWith('lxcts')).map((a) => `${a.ifname} ${a.attach} ${a.direction} ${a.progName}`).sort();
      case 'pins':
        // In this process's mount namespace (`ip netns exec` mounts a /sys of its own; the datapath mounts bpffs there).
        return fs.readdirSync(path.join(cfg.bpfRoot, 'links')).filter((f) => f.startsWith('lxcts')).sort();
      case 'remove':
        dp.removeEndpoint(eps.get(c.host!)!);
        eps.delete(c.host!);
        return {};
      case 'stop':
        dp.stop();
        setImmediate(() => process.exit(0));
        return {};
    }
  };
  const rl = readline.createInterface({ input: process.stdin });
  process.stdout.write('ready\n');
  for await (const line of rl) {
    try {
      process.stdout.write(`${JSON.stringify({ ok: await handle(JSON.parse(line) as Command) })}\n`);
    } catch (err) {
      process.stdout.write(`${JSON.stringify({ err: (err as Error).message })}\n`);
    }
  }
}

if (process.env['TDLT_TCX_CHILD']) {
  await child(JSON.parse(process.env['TDLT_TCX_CHILD']) as { prefix: string; bpfRoot: string });
} else {
  const PREFIX = `tdlt-${process.pid}-tx`;
  const NODE = `${PREFIX}-n`;
  const BPF_ROOT = `/sys/fs/bpf/tendril-test-${process.pid}-tcxswitch`;
  const HOSTS = [10, 20, 30, 40];
  let proc: ChildProcess | undefined;
  let lines: AsyncIterator<string> | undefined;

  const call = async <T>(c: Command): Promise<T> => {
    proc!.stdin!.write(`${JSON.stringify(c)}\n`);
    const r = await lines!.next();
    if (r.done) throw new Error(`the datapath child exited (command ${c.cmd})`);
    const out = JSON.parse(r.value) as { ok?: T; err?: string };
    if (out.err !== undefined) throw new Error(`child: ${c.cmd}: ${out.err}`);
    return out.ok as T;
  };
  const stats = () => call<{ bridged: number; switched: number; failed: number; offThread: number }>({ cmd: 'stats' });
  const ping = async (from: number, to: number) => (await exec(inNs(`${PREFIX}-p${from}`, ['ping', '-c', '1', '-W', '2', `${SUBNET}.${to}`]))).code === 0;

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/datapath-tcx-switch.test.ts needs root (namespaces, BPF, bpffs)');
    const ns = Netns.create(NODE);
    const nl = Netlink.openIn(ns);
    try {
      nl.setLink('lo', { up: true });
      nl.createVeth({ name: 'eth0', peerName: 'eth0p' });
      nl.addAddress(nl.getLink('eth0')!.index, '192.168.91.10/24');
      nl.setLink('eth0p', { up: true });
      nl.setLink('eth0', { up: true });
    } finally {
      nl.close();
      ns.close();
    }
    for (const h of HOSTS) Netns.create(`${PREFIX}-p${h}`).close();
    proc = spawn('ip', ['netns', 'exec', NODE, process.execPath, HERE], {
      env: { ...process.env, TDLT_TCX_CHILD: JSON.stringify({ prefix: PREFIX, bpfRoot: BPF_ROOT }) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    lines = readline.createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
    const first = await lines.next();
    assert.equal(first.value, 'ready', 'the datapath child started');
  });

  after(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc!.once('exit', r));
      await call({ cmd: 'stop' }).catch(() => proc!.kill('SIGKILL'));
      await Promise.race([exited, sleep(5000)]);
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
    for (const name of [...HOSTS.map((h) => `${PREFIX}-p${h}`), NODE]) {
      try {
        if (Netns.exists(name)) Netns.delete(name);
      } catch (err) {
        console.error(`cleanup: ${String(err)}`);
      }
    }
    fs.rmSync(BPF_ROOT, { recursive: true, force: true });
  });

  test('no pod is switched to tcx while a CNI call is in flight, however long the node is otherwise quiet', async () => {
    await call({ cmd: 'hold' });
    for (const h of HOSTS) await call({ cmd: 'add', host: h });
    assert.deepEqual(await call<string[]>({ cmd: 'attachments' }), HOSTS.map((h) => `lxcts${h} tc ingress cil_from_container`).sort());
    // Ten quiet times with the call in flight: the hold, not the timer, is what keeps the filters.
    await sleep(10 * QUIET_MS);
    assert.deepEqual(await stats(), { bridged: HOSTS.length, switched: 0, failed: 0, offThread: 0 });
    assert.ok(await ping(10, 20), 'the filters forward meanwhile');
  });

  test('an endpoint removed while bridged leaves nothing on its veth and is not switched', async () => {
    await call({ cmd: 'remove', host: 40 });
    assert.equal((await stats()).bridged, HOSTS.length - 1);
    assert.ok(!(await call<string[]>({ cmd: 'attachments' })).some((a) => a.startsWith('lxcts40 ')));
  });

  test('once the call ends and the node is quiet, every pod moves to a pinned tcx link attached off the event loop', async () => {
    await call({ cmd: 'release' });
    await until('every bridged pod switched', async () => (await stats()).bridged === 0, 60_000);
    assert.deepEqual(await stats(), { bridged: 0, switched: 3, failed: 0, offThread: 3 });
    assert.deepEqual(await call<string[]>({ cmd: 'attachments' }), [10, 20, 30].map((h) => `lxcts${h} tcx ingress cil_from_container`).sort(), 'the filters are gone');
    assert.deepEqual(await call<string[]>({ cmd: 'pins' }), ['lxcts10-ingress', 'lxcts20-ingress', 'lxcts30-ingress'], 'the links are pinned (none for the removed pod)');
    assert.ok(await ping(10, 20));
    assert.ok(await ping(30, 10));
  });
}
