// Integration: flows and monitor events of a real lab, through the relay and per node, via the CLI and via a
// gRPC client built from our protos. Root; the lab's namespaces are removed in after().
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { execCapture, labDown, labUp, loadLab, podAdd, restartAgent, type LabPod } from '../src/lab/lab.js';
import { REPO_ROOT, labPaths } from '../src/lab/paths.js';
import { HealthClient, ObserverClient, observerSocketFor, relaySocketIn, type Flow, type FlowFilter } from '../src/observe/index.js';
import { hubbleStatus } from './lib/hubble-status.js';

const LAB = `o${process.pid % 100000}`;
const BIN = path.join(REPO_ROOT, 'bin/tendril');
let a: LabPod, b: LabPod, c: LabPod;

function cli(args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(BIN, ['--lab', LAB, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function flows(address: string, whitelist: FlowFilter[], blacklist: FlowFilter[] = []): Promise<Flow[]> {
  const client = new ObserverClient(address);
  try {
    const out = await client.collectFlows({ number: 4095, whitelist, blacklist }, 10_000);
    return out.flatMap((r) => (r.kind === 'flow' ? [r.flow] : []));
  } finally {
    client.close();
  }
}

async function identityOf(pod: LabPod): Promise<number> {
  const node = loadLab(LAB).nodes.find((n) => n.name === pod.node)!;
  const eps = await new ApiClient(node.socket).get<Array<{ status: { identity: { id: number }; networking: { addressing: Array<{ ipv4: string }> } } }>>('/v1/endpoint');
  return eps.find((e) => e.status.networking.addressing[0]?.ipv4 === pod.ip)!.status.identity.id;
}

describe('flows of a two-node lab', { timeout: 180_000 }, () => {
  before(async () => {
    await labDown(LAB);
    await labUp({ name: LAB, nodes: 2 });
    a = await podAdd(LAB, 'pod-a', { node: 'ctr', labels: { app: 'a' } });
    c = await podAdd(LAB, 'pod-c', { node: 'ctr', labels: { app: 'c' } });
    b = await podAdd(LAB, 'pod-b', { node: 'w1', labels: { app: 'b' }, serve: 8080 });
    assert.equal(execCapture(a.netns, ['ping', '-c', '2', '-i', '0.2', c.ip]).status, 0);
    assert.equal(execCapture(a.netns, ['curl', '-s', '--max-time', '5', `http://${b.ip}:8080/`]).status, 0);
    // The agents poll their event rings every 20 ms: wait (one deadline) until the relay has both pods' flows.
    const relay = relaySocketIn(labPaths(LAB).dir);
    const end = Date.now() + 30_000;
    for (;;) {
      const icmp = await flows(relay, [{ source_pod: ['default/pod-a'], destination_pod: ['default/pod-c'], protocol: ['icmp'] }]);
      const tcp = await flows(relay, [{ destination_ip: [b.ip], protocol: ['tcp'] }]);
      if (icmp.some((f) => f.trace_observation_point === 'TO_ENDPOINT') && new Set(tcp.map((f) => f.node_name)).size === 2) break;
      assert.ok(Date.now() < end, 'the relay has the flows of the ping and the curl within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
  });
  after(async () => {
    await labDown(LAB);
  });

  test('a ping between two pods gives to-endpoint FORWARDED flows with both pods\' names and identities', async () => {
    const got = await flows(relaySocketIn(labPaths(LAB).dir), [{ source_pod: ['default/pod-a'], destination_pod: ['default/pod-c'], protocol: ['icmp'] }]);
    const toEp = got.filter((f) => f.trace_observation_point === 'TO_ENDPOINT');
    assert.ok(toEp.length >= 1, 'a to-endpoint flow from pod-a to pod-c');
    const f = toEp[0]!;
    assert.equal(f.verdict, 'FORWARDED');
    assert.equal(f.source?.pod_name, 'pod-a');
    assert.equal(f.destination?.pod_name, 'pod-c');
    assert.equal(f.source?.identity, await identityOf(a));
    assert.equal(f.destination?.identity, await identityOf(c));
    assert.ok(f.source?.labels?.includes('k8s:app=a'));
    assert.equal(f.node_name, 'ctr');
    const compact = cli(['observe', '--pod', 'default/pod-a', '--protocol', 'icmp', '--last', '40']);
    assert.equal(compact.status, 0, compact.stderr);
    assert.match(compact.stdout, /default\/pod-a \(ID:\d+\) -> default\/pod-c \(ID:\d+\) to-endpoint FORWARDED \(ICMPv4 EchoRequest\)/);
    assert.match(compact.stdout, /default\/pod-a \(ID:\d+\) <- default\/pod-c \(ID:\d+\) to-endpoint FORWARDED \(ICMPv4 EchoReply\)/);
  });

  test('the relay merges both nodes: the cross-node TCP flow is seen leaving ctr and arriving on w1', async () => {
    const got = await flows(relaySocketIn(labPaths(LAB).dir), [{ destination_ip: [b.ip], protocol: ['tcp'] }]);
    const nodes = new Set(got.map((f) => f.node_name));
    assert.deepEqual([...nodes].sort(), ['ctr', 'w1']);
    assert.ok(got.some((f) => f.node_name === 'ctr' && f.trace_observation_point === 'TO_OVERLAY'));
    assert.ok(got.some((f) => f.node_name === 'w1' && f.trace_observation_point === 'TO_ENDPOINT' && f.destination?.pod_name === 'pod-b'));
    const times = got.map((f) => f.time);
    assert.deepEqual(times, [...times].sort(), 'flows come in time order');
  });

  test('filters select exactly what they claim, and the gRPC client gets the same flows as the CLI', async () => {
    const relay = relaySocketIn(labPaths(LAB).dir);
    const icmp = await flows(relay, [{ protocol: ['icmp'] }]);
    assert.ok(icmp.length > 0 && icmp.every((f) => f.l4?.ICMPv4 !== undefined));
    const fromA = await flows(relay, [{ source_pod: ['default/pod-a'] }]);
    assert.ok(fromA.length > 0 && fromA.every((f) => f.source?.pod_name === 'pod-a' && f.source.namespace === 'default'));
    const notTcp = await flows(relay, [], [{ protocol: ['tcp'] }]);
    assert.ok(notTcp.every((f) => f.l4?.TCP === undefined));
    const json = cli(['observe', '--from-pod', 'default/pod-a', '--last', '4095', '-o', 'json']);
    assert.equal(json.status, 0, json.stderr);
    const cliUuids = json.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { flow: Flow }).flow.uuid).sort();
    assert.deepEqual(cliUuids, fromA.map((f) => f.uuid).sort());
  });

  test('`hubble status` answers Ok on each node (its own counters) and on the relay (both nodes connected)', async () => {
    for (const n of loadLab(LAB).nodes) {
      const target = `unix://${observerSocketFor(n.socket)}`;
      const r = await hubbleStatus(target);
      assert.equal(r.error, undefined, r.error);
      assert.equal(r.lines[0], `Healthcheck (via ${target}): Ok`);
      assert.match(r.lines[1]!, /^Current\/Max Flows: [\d,]+\/4,095 \(\d+\.\d\d%\)$/);
      assert.match(r.lines[2]!, /^Flows\/s: \d+\.\d\d$/);
      assert.equal(r.lines.length, 3, 'a node has no node counts, as a Cilium agent');
    }
    const target = `unix://${relaySocketIn(labPaths(LAB).dir)}`;
    const health = new HealthClient(target);
    try {
      // The relay probes its nodes every 5 s: it serves once a probe has found one answering.
      const end = Date.now() + 20_000;
      while ((await health.check()) !== 'SERVING') {
        assert.ok(Date.now() < end, 'the relay serves within 20 s');
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(await health.check(''), 'SERVING');
    } finally {
      health.close();
    }
    const r = await hubbleStatus(target);
    assert.equal(r.error, undefined, r.error);
    assert.equal(r.lines[0], `Healthcheck (via ${target}): Ok`);
    assert.match(r.lines[1]!, /^Current\/Max Flows: [\d,]+\/8,190 \(\d+\.\d\d%\)$/);
    assert.deepEqual(r.lines.slice(3), ['Connected Nodes: 2/2']);
  });

  test('a dropped packet is a DROPPED flow with its reason', async () => {
    spawnSync('ip', ['-n', a.netns, 'addr', 'add', '172.20.0.250/32', 'dev', 'eth0']);
    execCapture(a.netns, ['ping', '-c', '1', '-W', '1', '-I', '172.20.0.250', c.ip]);
    const node = observerSocketFor(loadLab(LAB).nodes[0]!.socket);
    // The agent reads its event ring every 20 ms: wait for the flow under one deadline.
    const end = Date.now() + 20_000;
    let dropped: Flow[] = [];
    const seen = (): boolean => dropped.some((f) => f.drop_reason_desc === 'INVALID_SOURCE_IP' && f.IP?.source === '172.20.0.250');
    while (!seen() && Date.now() < end) {
      dropped = await flows(node, [{ verdict: ['DROPPED'] }]);
      if (!seen()) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(seen(), JSON.stringify(dropped.slice(0, 2)));
    const line = cli(['--node', 'ctr', 'observe', '--verdict', 'DROPPED', '--last', '5']);
    assert.match(line.stdout, /172\.20\.0\.250 .* Invalid source ip DROPPED/);
  });

  test('tendril monitor streams trace events of the node while traffic runs', async () => {
    const mon = spawn(BIN, ['--lab', LAB, '--node', 'ctr', 'monitor'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise((r) => mon.once('exit', r));
    let out = '';
    mon.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const syn = new RegExp(`-> overlay .*${a.ip.replace(/\./g, '\\.')}:\\d+ -> ${b.ip.replace(/\./g, '\\.')}:8080 tcp SYN`);
    try {
      // The header comes before the subscription is live: connect again until a SYN shows (one deadline).
      const end = Date.now() + 30_000;
      while (!syn.test(out)) {
        assert.ok(Date.now() < end, `no SYN to pod-b in the monitor output within 30 s:\n${out}`);
        if (out.includes('Press Ctrl-C to quit')) execCapture(a.netns, ['curl', '-s', '--max-time', '5', `http://${b.ip}:8080/`]);
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.match(out, /Listening for events on \d+ CPUs/);
    } finally {
      mon.kill('SIGINT');
      await exited;
    }
  });

  test('a node\'s health follows its agent: NOT_SERVING before the agent goes, SERVING once the restarted one is ready', async () => {
    const node = loadLab(LAB).nodes.find((n) => n.name === 'w1')!;
    const health = new HealthClient(`unix://${observerSocketFor(node.socket)}`);
    const seen: string[] = [];
    const watch = health.watch('hubble.server.Observer', (st) => seen.push(st));
    try {
      const end = Date.now() + 30_000;
      while (seen[0] !== 'SERVING') {
        assert.ok(Date.now() < end, `the watch reports SERVING within 30 s (seen ${seen.join(', ')})`);
        await new Promise((r) => setTimeout(r, 50));
      }
      const restarted = restartAgent(LAB, node.name);
      // The stopping agent tells its watchers before it ends their streams.
      await watch.done.catch(() => undefined);
      assert.deepEqual(seen, ['SERVING', 'NOT_SERVING']);
      await restarted;
      // restartAgent() returns once the API answers ready; the health service agrees.
      assert.equal(await health.check(), 'SERVING');
      assert.equal(await health.check(''), 'SERVING');
      const r = await hubbleStatus(`unix://${observerSocketFor(node.socket)}`);
      assert.equal(r.error, undefined, r.error);
    } finally {
      watch.cancel();
      health.close();
    }
  });
});
