// Unit tests of the cross-node baselines' plan (no privileges: nothing is run).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BenchNetns } from './netns.js';
import { xBaselineNetns, xBaselinePlan } from './xnode.js';

const nets = new BenchNetns('tdlb-4242-');
const has = (cmds: string[][], argv: string[]) => cmds.some((c) => c.join(' ') === argv.join(' '));

test('xBaselinePlan() runs every command inside one of its own namespaces, never the caller\'s', () => {
  for (const kind of ['xroute', 'xvxlan'] as const) {
    const plan = xBaselinePlan(nets, kind);
    const own = new Set(xBaselineNetns(plan));
    assert.equal(own.size, 5);
    for (const ns of own) assert.ok(ns.startsWith(`tdlb-4242-${kind}-`), ns);
    for (const c of plan.commands) {
      const ns = c[0] === 'ip' ? (c[1] === '-n' ? c[2] : undefined) : c[0] === 'nsenter' ? c[1]?.replace('--net=/var/run/netns/', '') : undefined;
      assert.ok(ns !== undefined && own.has(ns), `runs outside the plan's namespaces: ${c.join(' ')}`);
    }
  }
});

test('xBaselinePlan("xroute") routes the peer pod /24 via the peer underlay IP, pods at MTU 1500, forwarding on', () => {
  const p = xBaselinePlan(nets, 'xroute');
  const [a, b] = p.nodes;
  assert.equal(p.podMtu, 1500);
  assert.deepEqual([a.ip, b.ip, a.podIp, b.podIp], ['192.168.77.100', '192.168.77.101', '10.240.0.3', '10.240.1.3']);
  assert.ok(has(p.commands, ['ip', '-n', a.ns, 'route', 'add', '10.240.1.0/24', 'via', '192.168.77.101', 'dev', 'eth0']));
  assert.ok(has(p.commands, ['ip', '-n', b.ns, 'route', 'add', '10.240.0.0/24', 'via', '192.168.77.100', 'dev', 'eth0']));
  assert.ok(has(p.commands, ['ip', '-n', a.pod, 'route', 'add', 'default', 'via', '10.240.0.1', 'dev', 'eth0']));
  assert.ok(has(p.commands, ['ip', '-n', b.ns, 'addr', 'add', '10.240.1.1/32', 'dev', 'lxc0']));
  assert.equal(p.commands.filter((c) => c.includes('net.ipv4.ip_forward=1')).length, 2);
  assert.ok(!p.commands.some((c) => c.includes('vxlan')), 'no tunnel in the routing baseline');
});

test('xBaselinePlan("xvxlan") gives each node a p2p kernel VXLAN (VNI 42, UDP 8472) and pods MTU 1450', () => {
  const p = xBaselinePlan(nets, 'xvxlan');
  const [a, b] = p.nodes;
  assert.equal(p.podMtu, 1450);
  assert.ok(
    has(p.commands, ['ip', '-n', a.ns, 'link', 'add', 'vx0', 'type', 'vxlan', 'id', '42', 'dstport', '8472', 'local', '192.168.78.100', 'remote', '192.168.78.101', 'dev', 'eth0', 'udpcsum']),
  );
  assert.ok(has(p.commands, ['ip', '-n', b.ns, 'link', 'set', 'vx0', 'mtu', '1450', 'up']));
  assert.ok(has(p.commands, ['ip', '-n', a.ns, 'route', 'add', '10.241.1.0/24', 'via', '10.241.255.2', 'dev', 'vx0']));
  assert.ok(has(p.commands, ['ip', '-n', b.ns, 'route', 'add', '10.241.0.0/24', 'via', '10.241.255.1', 'dev', 'vx0']));
  for (const n of p.nodes) {
    assert.ok(has(p.commands, ['ip', '-n', n.pod, 'link', 'set', 'eth0', 'mtu', '1450', 'up']));
    assert.ok(has(p.commands, ['ip', '-n', n.ns, 'link', 'set', 'lxc0', 'mtu', '1450', 'up']));
  }
});
