// Flow servers and the relay over real gRPC on unix sockets in a temp dir, fed with synthetic datapath events
// (no privileges needed), read back by clients built from Tendril's own .proto files; plus the CLI commands.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Command } from 'commander';
import {
  HealthClient,
  MonitorClient,
  ObserveError,
  ObserverClient,
  ObserverServer,
  Relay,
  compactLine,
  type FlowsResponse,
  type Flow,
} from '../src/observe/index.js';
import { PROTO_DIR } from '../src/observe/codec.js';
import { dropEvent, fakeContext, icmpPacket, tcpPacket, traceEvent, udpPacket } from '../src/observe/testing.js';
import { observeFlows, registerObserve, runRelay } from '../src/cli/observe-cmd.js';
import { hubbleStatus } from './lib/hubble-status.js';
import { monitorEvents, registerMonitor } from '../src/cli/monitor-cmd.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-observe-`));
const EPOCH = 1_754_463_026_228_000_000n; // Aug  6 06:50:26.228 UTC, the seed's hubble line
const SEC = 1_000_000_000n;

const ctrCtx = fakeContext({ nodeName: 'ctr', epochNs: EPOCH, ifnames: { 7: 'lxc6bfc4c764fad' } });
// w1's clock is 500 ms ahead of ctr's at equal ktime, so the two nodes' flows interleave.
const w1Ctx = fakeContext({ nodeName: 'w1', epochNs: EPOCH + SEC / 2n });

let ctr: ObserverServer;
let w1: ObserverServer;
let relay: Relay;
const closers: Array<() => void | Promise<void>> = [];

const ping = (seq: number): Buffer => icmpPacket({ src: '172.20.2.179', dst: '172.20.2.71', seq });
const pong = (seq: number): Buffer => icmpPacket({ src: '172.20.2.71', dst: '172.20.2.179', type: 0, seq });

/** A to-endpoint echo request at ktime k seconds (what `ping` from curl-pod to netshoot-pod shows). */
function request(k: bigint): ReturnType<typeof traceEvent> {
  return traceEvent({ data: ping(Number(k)), obsPoint: 'to-endpoint', source: 1234, dstId: 1234, srcIdentity: 47080, dstIdentity: 47080, ifindex: 7, ktimeNs: k * SEC });
}
function reply(k: bigint): ReturnType<typeof traceEvent> {
  return traceEvent({ data: pong(Number(k)), obsPoint: 'to-endpoint', reason: 'reply', source: 1169, dstId: 1169, srcIdentity: 47080, dstIdentity: 47080, ifindex: 7, ktimeNs: k * SEC });
}

function client(address: string): ObserverClient {
  const c = new ObserverClient(address);
  closers.push(() => c.close());
  return c;
}

function flowsOf(rs: FlowsResponse[]): Flow[] {
  return rs.flatMap((r) => (r.kind === 'flow' ? [r.flow] : []));
}

function lines(rs: FlowsResponse[], nodeName = false): string[] {
  return flowsOf(rs).map((f) => compactLine(f, { utc: true, nodeName }));
}

async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function healthClient(address: string): HealthClient {
  const c = new HealthClient(address);
  closers.push(() => c.close());
  return c;
}

/** Polls a health check until it answers `want` (a relay probes its nodes; grpc-js reconnects with backoff). */
async function untilHealth(c: HealthClient, want: string, service?: string): Promise<void> {
  const end = Date.now() + 30_000;
  let last = '';
  while (last !== want) {
    if (Date.now() > end) throw new Error(`${c.address} still answers ${last}, not ${want}`);
    last = await c.check(service, 2000);
    if (last !== want) await new Promise((r) => setTimeout(r, 20));
  }
}

before(async () => {
  ctr = new ObserverServer({ nodeName: 'ctr', socketPath: path.join(dir, 'ctr', 'observer.sock'), context: ctrCtx, tcpPort: 0, numCpus: 2, ringBytes: 262144 });
  w1 = new ObserverServer({ nodeName: 'w1', socketPath: path.join(dir, 'w1', 'observer.sock'), context: w1Ctx });
  await ctr.start();
  await w1.start();
  // ctr: request/reply pairs at 0..4 s; w1: a UDP flow at each second (appearing at +0.5 s).
  for (let k = 0n; k < 5n; k++) {
    ctr.ingest(request(k));
    ctr.ingest(reply(k));
    w1.ingest(traceEvent({ data: udpPacket({ src: '172.20.1.3', dst: '172.20.2.71', sport: 40000 + Number(k), dport: 53 }), obsPoint: 'from-overlay', reason: 'unknown', srcIdentity: 6, dstIdentity: 47080, ktimeNs: k * SEC }));
  }
  relay = new Relay({
    socketPath: path.join(dir, 'relay.sock'),
    peers: [
      { name: 'ctr', address: `unix://${ctr.socketPath}` },
      { name: 'w1', address: w1.socketPath },
      { name: 'w2', address: path.join(dir, 'w2', 'observer.sock') },
    ],
    // Wide enough that two flows published back to back still meet in the window on a loaded machine.
    sortWindowMs: 1000,
    peerTimeoutMs: 10_000,
  });
  await relay.start();
});

after(async () => {
  for (const c of closers) await c();
  await relay?.stop();
  await ctr?.stop();
  await w1?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('GetFlows returns the last N flows oldest first, or the first N', async () => {
  const c = client(ctr.socketPath);
  assert.deepEqual(lines(await c.collectFlows({ number: 2 })), [
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) <- default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoReply)',
  ]);
  assert.deepEqual(lines(await c.collectFlows({ number: 1, first: true })), [
    'Aug  6 06:50:26.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
  ]);
  assert.equal(flowsOf(await c.collectFlows({})).length, 10, 'number 0 without follow: everything');
});

test('GetFlows honours since/until and whitelist/blacklist filters', async () => {
  const c = client(ctr.socketPath);
  const window = flowsOf(await c.collectFlows({ since: EPOCH + 1n * SEC, until: EPOCH + 2n * SEC }));
  assert.equal(window.length, 4);
  const replies = await c.collectFlows({ number: 10, whitelist: [{ reply: [true] }] });
  assert.equal(flowsOf(replies).length, 5);
  assert.ok(flowsOf(replies).every((f) => f.Summary === 'ICMPv4 EchoReply'));
  const notReplies = await c.collectFlows({ number: 10, blacklist: [{ source_pod: ['default/netshoot-pod'] }] });
  assert.ok(flowsOf(notReplies).every((f) => f.source?.pod_name === 'curl-pod'));
  assert.equal(flowsOf(notReplies).length, 5);
  await assert.rejects(c.collectFlows({ whitelist: [{ source_ip: ['not-an-ip'] }] }), (err: ObserveError) => {
    assert.equal(err.code, 'TENDRIL_ERR_OBSERVE_INVALID');
    assert.match(err.message, /Invalid IP filter "not-an-ip"/);
    return true;
  });
  await assert.rejects(c.getFlows({ first: true, follow: true }, () => undefined).done, { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('GetFlows follow sends the last N, then new matching flows as they are published', async () => {
  const c = client(ctr.socketPath);
  const got: FlowsResponse[] = [];
  let subscribed = false;
  const h = c.getFlows({ number: 1, follow: true, whitelist: [{ reply: [false] }] }, (r) => {
    if (r.kind === 'node_status') subscribed = true;
    got.push(r);
  });
  await until(() => subscribed, 'the end of the history');
  ctr.ingest(request(10n));
  ctr.ingest(reply(10n));
  ctr.ingest(request(11n));
  await until(() => flowsOf(got).length === 3, 'three flows');
  h.cancel();
  await h.done;
  assert.deepEqual(lines(got), [
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
    'Aug  6 06:50:36.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
    'Aug  6 06:50:37.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
  ]);
  await until(() => ctr.followers === 0, 'the follower to go away');
});

test('GetFlows follow with until ends the stream once a later flow is published', async () => {
  const c = client(ctr.socketPath);
  const got: FlowsResponse[] = [];
  const h = c.getFlows({ follow: true, since: EPOCH + 12n * SEC, until: EPOCH + 13n * SEC }, (r) => got.push(r));
  await until(() => got.some((r) => r.kind === 'node_status'), 'the end of the history');
  ctr.ingest(request(12n));
  ctr.ingest(request(14n));
  await h.done;
  assert.equal(flowsOf(got).length, 1);
});

test('ServerStatus, GetNodes and GetNamespaces describe the node; TCP loopback serves the same API', async () => {
  const s = await client(ctr.socketPath).serverStatus();
  assert.equal(s.max_flows, 4095);
  assert.equal(s.num_flows, s.seen_flows);
  assert.ok(s.num_flows >= 10);
  assert.ok(s.uptime_ns > 0n);
  assert.match(s.version, /^tendril /);
  assert.equal(s.num_connected_nodes, undefined, 'a node leaves the relay fields unset, as Hubble');
  assert.ok(ctr.tcpAddress?.startsWith('127.0.0.1:'));
  const tcp = client(ctr.tcpAddress!);
  const nodes = await tcp.getNodes();
  assert.equal(nodes.length, 1);
  assert.equal(nodes[0]!.name, 'ctr');
  assert.equal(nodes[0]!.state, 'NODE_CONNECTED');
  assert.deepEqual(await tcp.getNamespaces(), []);

  const small = new ObserverServer({ nodeName: 'tiny', socketPath: path.join(dir, 'tiny.sock'), context: ctrCtx, maxFlows: 3 });
  await small.start();
  closers.push(() => small.stop());
  for (let k = 0n; k < 5n; k++) small.ingest(request(k));
  const st = await client(small.socketPath).serverStatus();
  assert.deepEqual([st.num_flows, st.max_flows, st.seen_flows], [3, 3, 5]);
});

test('the health service answers SERVING for "hubble.server.Observer" and "" as Hubble\'s; Watch follows setServing() and stop()', async () => {
  const srv = new ObserverServer({ nodeName: 'hc', socketPath: path.join(dir, 'hc', 'observer.sock'), serving: false });
  await srv.start();
  const c = healthClient(srv.socketPath);
  assert.equal(await c.check(), 'NOT_SERVING');
  assert.equal(await c.check(''), 'NOT_SERVING');
  await assert.rejects(c.check('observer.Observer'), (e: ObserveError) => {
    assert.equal(e.code, 'TENDRIL_ERR_OBSERVE_SERVER');
    assert.match(e.message, /Health status unknown for service observer\.Observer \(NOT_FOUND\)$/);
    return true;
  });
  assert.deepEqual(await hubbleStatus(`unix://${srv.socketPath}`), {
    lines: [`Healthcheck (via unix://${srv.socketPath}): Unavailable: NOT_SERVING`],
    error: 'not healthy',
  });

  const seen: string[] = [];
  const w = c.watch('hubble.server.Observer', (s) => seen.push(s));
  const unknown: string[] = [];
  const wu = c.watch('nope', (s) => unknown.push(s));
  await until(() => seen.length === 1 && unknown.length === 1, 'the current statuses');
  srv.setServing(true);
  await until(() => seen.length === 2, 'the change');
  assert.equal(await c.check(''), 'SERVING');
  assert.equal(srv.serving, true);
  await srv.stop();
  await w.done;
  await wu.done;
  assert.deepEqual(seen, ['NOT_SERVING', 'SERVING', 'NOT_SERVING'], 'watchers hear NOT_SERVING before the server goes');
  assert.deepEqual(unknown, ['SERVICE_UNKNOWN']);
});

test('`hubble status` on a node and on the relay: the health check, then the counters (nodes from the relay only)', async () => {
  const node = await hubbleStatus(`unix://${ctr.socketPath}`);
  const n = (await client(ctr.socketPath).serverStatus()).num_flows;
  assert.equal(node.error, undefined);
  assert.equal(node.lines.length, 3, node.lines.join('\n'));
  assert.equal(node.lines[0], `Healthcheck (via unix://${ctr.socketPath}): Ok`);
  assert.equal(node.lines[1], `Current/Max Flows: ${n}/4,095 (${((n / 4095) * 100).toFixed(2)}%)`);
  assert.match(node.lines[2]!, /^Flows\/s: \d+\.\d\d$/);

  const target = `unix://${path.join(dir, 'relay.sock')}`;
  await untilHealth(healthClient(target), 'SERVING');
  const r = await hubbleStatus(target);
  assert.equal(r.error, undefined);
  assert.equal(r.lines[0], `Healthcheck (via ${target}): Ok`);
  assert.match(r.lines[1]!, /^Current\/Max Flows: \d+\/8,190 \(\d+\.\d\d%\)$/);
  assert.match(r.lines[2]!, /^Flows\/s: \d+\.\d\d$/);
  assert.deepEqual(r.lines.slice(3), ['Connected Nodes: 2/3', 'Unavailable Nodes: 1', '  - w2']);
});

test('Relay health: NOT_SERVING while no node answers, SERVING once one does, NOT_SERVING when none is left', async () => {
  const late = new ObserverServer({ nodeName: 'late', socketPath: path.join(dir, 'late', 'observer.sock') });
  const r = new Relay({ socketPath: path.join(dir, 'relay-h.sock'), peers: [{ name: 'late', address: late.socketPath }], healthIntervalMs: 50, peerTimeoutMs: 5000 });
  closers.push(() => r.stop(), () => late.stop());
  await r.start();
  const c = healthClient(path.join(dir, 'relay-h.sock'));
  const seen: string[] = [];
  const w = c.watch('', (s) => seen.push(s));
  assert.equal(await c.check(), 'NOT_SERVING');
  await late.start();
  await untilHealth(c, 'SERVING');
  assert.equal(r.serving, true);
  await late.stop();
  await untilHealth(c, 'NOT_SERVING', '');
  r.setPeers([{ name: 'ctr', address: ctr.socketPath }]);
  await untilHealth(c, 'SERVING');
  r.setPeers([]);
  await untilHealth(c, 'NOT_SERVING');
  await r.stop();
  await w.done;
  // Each change once (a probe that times out on a loaded machine may add a NOT_SERVING/SERVING pair).
  assert.ok(seen.every((x, i) => i === 0 || x !== seen[i - 1]), seen.join(' '));
  assert.deepEqual([seen[0], seen.filter((x) => x === 'SERVING').length >= 2, seen.at(-1)], ['NOT_SERVING', true, 'NOT_SERVING']);
});

test('a plain @grpc/grpc-js client from our .proto files reads Hubble-shaped messages', async () => {
  const def = protoLoader.loadSync('observer/observer.proto', { includeDirs: [PROTO_DIR], keepCase: true, enums: String, longs: String, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { observer: { Observer: grpc.ServiceClientConstructor } };
  const raw = new pkg.observer.Observer(`unix://${ctr.socketPath}`, grpc.credentials.createInsecure());
  closers.push(() => raw.close());
  const msgs: Array<Record<string, unknown>> = [];
  await new Promise<void>((resolve, reject) => {
    const call = (raw as unknown as { GetFlows(req: unknown): grpc.ClientReadableStream<Record<string, unknown>> }).GetFlows({ number: 1 });
    call.on('data', (m: Record<string, unknown>) => msgs.push(m));
    call.on('end', resolve);
    call.on('error', reject);
  });
  assert.equal(msgs.length, 1);
  const m = msgs[0]!;
  assert.equal(m['response_types'], 'flow');
  assert.equal(m['node_name'], 'ctr');
  const flow = m['flow'] as Record<string, Record<string, unknown>>;
  assert.equal(flow['verdict'] as unknown, 'FORWARDED');
  assert.equal(flow['IP']!['source'], '172.20.2.179');
  assert.equal(flow['source']!['pod_name'], 'curl-pod');
  assert.equal(flow['trace_observation_point'] as unknown, 'TO_ENDPOINT');
  assert.deepEqual(flow['event_type'], { type: 4 }, 'sub_type 0 (to-endpoint) is the proto3 default, not on the wire');
});

test('Relay merges the nodes\' flows in time order and reports unreachable nodes', async () => {
  const rs = await client(`unix://${path.join(dir, 'relay.sock')}`).collectFlows({ number: 4, until: EPOCH + 5n * SEC });
  const status = rs.filter((r) => r.kind === 'node_status');
  assert.deepEqual(
    status.map((r) => (r.kind === 'node_status' ? [r.node_status.state_change, r.node_status.node_names] : [])),
    [
      ['NODE_CONNECTED', ['ctr', 'w1']],
      ['NODE_UNAVAILABLE', ['w2']],
    ],
  );
  assert.deepEqual(lines(rs, true), [
    'Aug  6 06:50:29.728 [w1]: 172.20.1.3:40003 (remote-node) <> default/netshoot-pod:53 (ID:47080) from-overlay FORWARDED (UDP)',
    'Aug  6 06:50:30.228 [ctr]: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)',
    'Aug  6 06:50:30.228 [ctr]: default/curl-pod (ID:47080) <- default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoReply)',
    'Aug  6 06:50:30.728 [w1]: 172.20.1.3:40004 (remote-node) <> default/netshoot-pod:53 (ID:47080) from-overlay FORWARDED (UDP)',
  ]);
  const first = await client(path.join(dir, 'relay.sock')).collectFlows({ number: 3, first: true });
  assert.deepEqual(
    flowsOf(first).map((f) => `${f.node_name} ${f.time}`),
    ['ctr 2025-08-06T06:50:26.228Z', 'ctr 2025-08-06T06:50:26.228Z', 'w1 2025-08-06T06:50:26.728Z'],
  );
});

test('Relay follow interleaves live flows of all nodes in time order', async () => {
  const got: FlowsResponse[] = [];
  const h = client(path.join(dir, 'relay.sock')).getFlows({ number: 2, follow: true, whitelist: [{ node_name: ['ctr', 'w1'] }] }, (r) => got.push(r));
  await until(() => got.some((r) => r.kind === 'node_status' && r.node_status.state_change === 'NODE_CONNECTED'), 'the relay to go live');
  const history = flowsOf(got).length;
  assert.equal(history, 2, 'the merged history is cut to the last 2');
  // Published out of time order across nodes: w1 at 20.5 s first, then ctr at 20 s.
  w1.ingest(traceEvent({ data: udpPacket({ src: '172.20.1.3', dst: '172.20.2.71', sport: 41000, dport: 53 }), obsPoint: 'from-overlay', srcIdentity: 6, dstIdentity: 47080, ktimeNs: 20n * SEC }));
  ctr.ingest(request(20n));
  await until(() => flowsOf(got).length === history + 2, 'two live flows');
  h.cancel();
  await h.done;
  assert.deepEqual(
    flowsOf(got).slice(history).map((f) => `${f.node_name} ${f.time}`),
    ['ctr 2025-08-06T06:50:46.228Z', 'w1 2025-08-06T06:50:46.728Z'],
  );
  assert.ok(got.some((r) => r.kind === 'node_status' && r.node_status.state_change === 'NODE_UNAVAILABLE' && r.node_status.node_names[0] === 'w2'));
});

test('Relay ServerStatus and GetNodes sum the nodes and list the unavailable one', async () => {
  const c = client(path.join(dir, 'relay.sock'));
  const [a, b] = [await client(ctr.socketPath).serverStatus(), await client(w1.socketPath).serverStatus()];
  const s = await c.serverStatus();
  assert.equal(s.num_flows, a.num_flows + b.num_flows);
  assert.equal(s.max_flows, 8190);
  assert.equal(s.num_connected_nodes, 2);
  assert.equal(s.num_unavailable_nodes, 1);
  assert.deepEqual(s.unavailable_nodes, ['w2']);
  const nodes = await c.getNodes();
  assert.deepEqual(nodes.map((n) => [n.name, n.state]), [['ctr', 'NODE_CONNECTED'], ['w1', 'NODE_CONNECTED'], ['w2', 'NODE_UNAVAILABLE']]);
  relay.setPeers([{ name: 'ctr', address: ctr.socketPath }]);
  assert.deepEqual((await c.getNodes()).map((n) => n.name), ['ctr']);
  relay.setPeers([
    { name: 'ctr', address: `unix://${ctr.socketPath}` },
    { name: 'w1', address: w1.socketPath },
    { name: 'w2', address: path.join(dir, 'w2', 'observer.sock') },
  ]);
});

test('Monitor streams raw events with server-side filters and the monitor CLI prints them', async () => {
  const out: string[] = [];
  const ac = new AbortController();
  let ready = false;
  const done = monitorEvents(ctr.socketPath, { types: ['drop'], relatedTo: [1234] }, { verbosity: 0 }, (s) => out.push(s), { signal: ac.signal, ready: () => (ready = true) });
  await until(() => ready, 'the monitor subscription');
  ctr.ingest(request(30n));
  ctr.ingest(dropEvent({ data: tcpPacket({ src: '10.9.9.9', dst: '172.20.2.71', sport: 5555, dport: 80, flags: 'SYN' }), reason: 133, line: 88, source: 1234, dstId: 1234, srcIdentity: 2, dstIdentity: 47080, ifindex: 7, ktimeNs: 31n * SEC }));
  ctr.ingest(dropEvent({ data: tcpPacket({ src: '10.9.9.9', dst: '172.20.2.179', sport: 5555, dport: 80, flags: 'SYN' }), reason: 133, source: 1169, dstId: 1169, ktimeNs: 32n * SEC }));
  await until(() => out.length === 2, 'one drop line');
  ac.abort();
  await done;
  assert.deepEqual(out, [
    'Listening for events on 2 CPUs with 64x4096 of shared memory\nPress Ctrl-C to quit\n',
    'xx drop (Policy denied) flow 0x0 to endpoint 1234, ifindex 7, file bpf_lxc.c:88, , identity world->47080: 10.9.9.9:5555 -> 172.20.2.71:80 tcp SYN\n',
  ]);
  const info = await new MonitorClient(ctr.socketPath).info();
  assert.deepEqual(info, { nodeName: 'ctr', numCpus: 2, ringBytes: 262144, version: info.version });
});

test('a follower that cannot keep up loses flows and is told how many', async () => {
  const slow = new ObserverServer({ nodeName: 'slow', socketPath: path.join(dir, 'slow.sock'), context: ctrCtx, followerQueue: 8 });
  await slow.start();
  closers.push(() => slow.stop());
  const got: FlowsResponse[] = [];
  const h = client(slow.socketPath).getFlows({ follow: true }, (r) => got.push(r));
  await until(() => got.length === 1, 'the end of the (empty) history');
  // Published in one go: nothing reaches the socket in between, so the follower's queue overflows.
  const total = 3000;
  for (let i = 0; i < total; i++) slow.ingest(request(BigInt(i)));
  const lost = (): number => got.reduce((n, r) => n + (r.kind === 'lost_events' ? r.lost_events.num_events_lost : 0), 0);
  await until(() => flowsOf(got).length + lost() === total, 'every flow delivered or counted lost');
  h.cancel();
  await h.done;
  assert.ok(lost() > 0, 'some flows were dropped for the slow follower');
  assert.ok(got.some((r) => r.kind === 'lost_events' && r.lost_events.source === 'OBSERVER_EVENTS_QUEUE'));
  assert.equal((await client(slow.socketPath).serverStatus()).seen_flows, total, 'the ring saw all of them');
});

test('observeFlows() prints compact lines and lists unavailable nodes on stderr like hubble observe', async () => {
  const out: string[] = [];
  const err: string[] = [];
  await observeFlows(path.join(dir, 'relay.sock'), { number: 2, until: EPOCH + 5n * SEC, whitelist: [{ node_name: ['ctr'] }] }, 'compact', { utc: true }, (s) => out.push(s), (s) => err.push(s));
  assert.deepEqual(out, [
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)\n',
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) <- default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoReply)\n',
  ]);
  assert.equal(err.length, 1);
  assert.match(err[0]!, /: 1 nodes are unavailable: w2\n$/);
  const table: string[] = [];
  await observeFlows(ctr.socketPath, { number: 1, until: EPOCH + 5n * SEC }, 'table', { utc: true }, (s) => table.push(s), () => undefined);
  assert.deepEqual(table.join('').split('\n'), [
    'TIMESTAMP             SOURCE                 DESTINATION        TYPE          VERDICT     SUMMARY',
    'Aug  6 06:50:30.228   default/netshoot-pod   default/curl-pod   to-endpoint   FORWARDED   ICMPv4 EchoReply',
    '',
  ]);
});

test('`tendril observe` and `tendril monitor` parse their flags and talk to the given server', async () => {
  const out: string[] = [];
  const err: string[] = [];
  const program = new Command().exitOverride().enablePositionalOptions();
  program.option('--lab <name>').option('--node <node>').option('--socket <path>');
  registerObserve(program, { out: (s) => out.push(s), err: (s) => err.push(s) });
  registerMonitor(program, (s) => out.push(s));
  await program.parseAsync(
    ['observe', '--server', ctr.socketPath, '--utc', '--last', '2', '--until', '2025-08-06T06:50:31Z', '--from-pod', 'curl-pod', '--not', '--protocol', 'tcp', '-o', 'compact'],
    { from: 'user' },
  );
  assert.deepEqual(out, [
    'Aug  6 06:50:29.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)\n',
    'Aug  6 06:50:30.228: default/curl-pod (ID:47080) -> default/netshoot-pod (ID:47080) to-endpoint FORWARDED (ICMPv4 EchoRequest)\n',
  ]);
  out.length = 0;
  await program.parseAsync(['observe', 'status', '--server', path.join(dir, 'relay.sock')], { from: 'user' });
  assert.match(out.join(''), /^Healthcheck \(via .*relay\.sock\): Ok\nCurrent\/Max Flows: [\d,]+\/8,190 \(\d+\.\d\d%\)\nFlows\/s: \d+\.\d\d\nConnected Nodes: 2\/3\nUnavailable Nodes: 1\n {2}- w2\n$/);
  out.length = 0;
  // A server that is not SERVING: the health line as hubble prints it, no counters, and an error (exit code 1).
  const sick = new ObserverServer({ nodeName: 'sick', socketPath: path.join(dir, 'sick', 'observer.sock'), serving: false });
  await sick.start();
  closers.push(() => sick.stop());
  const target = `unix://${sick.socketPath}`;
  await assert.rejects(program.parseAsync(['observe', 'status', '--server', target], { from: 'user' }), (e: ObserveError) => {
    assert.equal(e.code, 'TENDRIL_ERR_OBSERVE_SERVER');
    assert.equal(e.message, `not healthy: the flow server at ${target} answers NOT_SERVING`);
    return true;
  });
  assert.deepEqual(out.join('').split('\n').slice(0, -1), (await hubbleStatus(target)).lines);
  assert.deepEqual(out, [`Healthcheck (via ${target}): Unavailable: NOT_SERVING\n`]);
  out.length = 0;
  await program.parseAsync(['observe', 'nodes', '--server', path.join(dir, 'relay.sock')], { from: 'user' });
  const rows = out.join('').split('\n');
  assert.match(rows[0]!, /^NAME +STATUS +AGE +FLOWS\/S +CURRENT\/MAX-FLOWS$/);
  assert.match(rows[1]!, /^ctr +Connected +\d+s +\d+\.\d\d +\d+\/4095 \(/);
  assert.match(rows[3]!, /^w2 +Unavailable +N\/A +N\/A +N\/A$/);
  await assert.rejects(program.parseAsync(['observe', '--server', path.join(dir, 'nowhere.sock'), '--last', '1'], { from: 'user' }), (e: ObserveError) => {
    assert.equal(e.code, 'TENDRIL_ERR_OBSERVE_UNREACHABLE');
    assert.match(e.message, /^Cannot reach the flow server at .*nowhere\.sock: connect ENOENT/);
    return true;
  });
  await assert.rejects(program.parseAsync(['observe', '--server', ctr.socketPath, '--verdict', 'MAYBE'], { from: 'user' }), { code: 'TENDRIL_ERR_OBSERVE_INVALID' });
});

test('runRelay() serves until aborted and follows a changing node list', async () => {
  const listen = path.join(dir, 'lab', 'relay.sock');
  let peers = [{ name: 'ctr', address: ctr.socketPath }];
  const ac = new AbortController();
  let relayReady = false;
  const running = runRelay({ listen, peers, refresh: { everyMs: 20, peers: () => peers } }, ac.signal, () => (relayReady = true));
  await until(() => relayReady, 'the relay to listen');
  const c = client(listen);
  assert.deepEqual((await c.getNodes()).map((n) => n.name), ['ctr']);
  peers = [...peers, { name: 'w1', address: w1.socketPath }];
  let names: string[] = [];
  await until(async () => (names = (await c.getNodes()).map((n) => n.name)).length >= 2, 'the relay to follow the new node list');
  assert.deepEqual(names, ['ctr', 'w1']);
  ac.abort();
  await running;
  assert.equal(fs.existsSync(listen), false);
});

test('ObserverServer replaces a stale socket file but refuses a live one', async () => {
  const file = path.join(dir, 'stale.sock');
  // A socket file left by a process that died without cleaning up (as a crashed agent would).
  const child = spawn(process.execPath, ['-e', "require('net').createServer().listen(process.argv[1], () => console.log('up'))", file], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
  assert.ok(fs.existsSync(file), 'a dead socket file is left behind');
  const a = new ObserverServer({ nodeName: 'a', socketPath: file });
  await a.start();
  const b = new ObserverServer({ nodeName: 'b', socketPath: file });
  await assert.rejects(b.start(), { code: 'TENDRIL_ERR_OBSERVE_SERVER', message: /another server is listening there/ });
  await b.stop();
  assert.ok(fs.existsSync(file), 'the failed server leaves the live socket alone');
  await a.stop();
  assert.equal(fs.existsSync(file), false, 'stop() removes the socket');
});
