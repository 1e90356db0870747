// Unit tests of the operator's flag handling: store choice, listen addresses, durations, messages naming the flag.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Command } from 'commander';
import { operatorConfig, parseDuration, parseListen, type OperatorFlags } from './config.js';
import { registerOperator } from './cli.js';
import { OperatorError } from './errors.js';

function invalid(re: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof OperatorError, String(err));
    assert.equal(err.code, 'TENDRIL_ERR_INVALID_CONFIG');
    assert.match(err.message, re);
    return true;
  };
}

test('operatorConfig() applies the defaults and picks the hosted store with --store-listen', () => {
  assert.deepEqual(operatorConfig({ storeListen: 'unix:///run/t/store.sock', storeData: '/tmp/d' }), {
    ipam: 'cluster-pool',
    pool: { cidrs: ['10.0.0.0/8'], maskSize: 24 },
    store: { mode: 'host', listen: { socket: '/run/t/store.sock' }, dataDir: '/tmp/d' },
    graceMs: 30_000,
    identityGcIntervalMs: 10_000,
    identityGcGraceMs: 60_000,
    nodeMonitorGracePeriodMs: 0,
    apiSocket: '/var/run/tendril/operator.sock',
  });
  const cfg = operatorConfig({
    store: 'etcd://127.0.0.1:2379',
    clusterPoolCidr: '172.20.0.0/16',
    clusterPoolMaskSize: '26',
    nodeCidrGrace: '300ms',
    identityGcInterval: '2s',
    identityGcGrace: '500ms',
    nodeMonitorGracePeriod: '12s',
    apiSocket: '/tmp/op.sock',
    logFile: '/tmp/op.log',
  });
  assert.deepEqual(cfg, {
    ipam: 'cluster-pool',
    pool: { cidrs: ['172.20.0.0/16'], maskSize: 26 },
    store: { mode: 'connect', url: 'etcd://127.0.0.1:2379' },
    graceMs: 300,
    identityGcIntervalMs: 2000,
    identityGcGraceMs: 500,
    nodeMonitorGracePeriodMs: 12_000,
    apiSocket: '/tmp/op.sock',
    logFile: '/tmp/op.log',
  });
  assert.equal(operatorConfig({ storeListen: '127.0.0.1:0' }).store.mode, 'host');
});

test('operatorConfig() refuses contradictory, missing or malformed flags, naming them', () => {
  assert.throws(() => operatorConfig({}), invalid(/^Missing store: give --store URL/));
  assert.throws(() => operatorConfig({ store: 'etcd://a:1', nodeMonitorGracePeriod: 'soon' }), invalid(/--node-monitor-grace-period "soon"/));
  assert.throws(() => operatorConfig({ store: 'etcd://a:1', storeListen: 'a:1' }), invalid(/^Cannot use both --store etcd:\/\/a:1 and --store-listen a:1/));
  assert.throws(() => operatorConfig({ store: 'etcd://a:1', storeData: '/x' }), invalid(/--store-data only applies with --store-listen/));
  assert.throws(() => operatorConfig({ store: 'http://a:1' }), invalid(/^Invalid --store "http:\/\/a:1": unknown scheme "http"/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', clusterPoolMaskSize: '33' }), invalid(/--cluster-pool-ipv4-mask-size/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', clusterPoolMaskSize: '24', clusterPoolIpv4MaskSize: '26' }), invalid(/^Conflicting --cluster-pool-ipv4-mask-size 26 and --cluster-pool-mask-size 24/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', ipam: 'crd' }), invalid(/^Invalid --ipam "crd": expected one of cluster-pool, kubernetes, multi-pool$/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', clusterPoolIpv4Cidr: ['10.0.0.0/16', '10.0.1.0/24'] }), invalid(/overlaps 10\.0\.0\.0\/16/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', nodeCidrGrace: '30' }), invalid(/^Invalid --node-cidr-grace "30": expected a duration such as 30s/));
  assert.throws(() => operatorConfig({ storeListen: 'a:1', apiSocket: '' }), invalid(/^Invalid --api-socket ""/));
});

test('parseListen() accepts unix sockets and HOST:PORT', () => {
  assert.deepEqual(parseListen('unix:///a/b.sock'), { socket: '/a/b.sock' });
  assert.deepEqual(parseListen('0.0.0.0:4001'), { host: '0.0.0.0', port: 4001 });
  assert.deepEqual(parseListen('[::1]:4001'), { host: '::1', port: 4001 });
  assert.throws(() => parseListen('unix://rel.sock'), invalid(/^Invalid --store-listen "unix:\/\/rel\.sock": the socket path must be absolute/));
  assert.throws(() => parseListen('host'), invalid(/not an address; expected unix:\/\/\/path\/to\.sock or HOST:PORT$/));
  assert.throws(() => parseListen('h:70000'), invalid(/port 70000 is above 65535/));
});

test('parseDuration() reads Go-style durations', () => {
  assert.equal(parseDuration('--x', '30s'), 30_000);
  assert.equal(parseDuration('--x', '300ms'), 300);
  assert.equal(parseDuration('--x', '1m30s'), 90_000);
  assert.equal(parseDuration('--x', '1.5s'), 1500);
  assert.equal(parseDuration('--x', '2h'), 7_200_000);
  assert.equal(parseDuration('--x', '0'), 0);
  for (const bad of ['', '30', 's', '10 s', '-1s', '5d']) {
    assert.throws(() => parseDuration('--x', bad), invalid(/^Invalid --x /), bad);
  }
});

test('registerOperator() adds `operator` with its flags and passes them camelCased', async () => {
  const program = new Command().exitOverride();
  const cmd = registerOperator(program);
  assert.equal(cmd.name(), 'operator');
  const seen: Record<string, unknown>[] = [];
  cmd.action((opts: Record<string, unknown>) => void seen.push(opts));
  await program.parseAsync(['node', 'tendril', 'operator', '--store-listen', 'unix:///tmp/s.sock', '--node-cidr-grace', '5s'], { from: 'node' });
  const opts = seen[0]!;
  assert.equal(opts['storeListen'], 'unix:///tmp/s.sock');
  assert.equal(opts['nodeCidrGrace'], '5s');
  assert.equal(opts['ipam'], 'cluster-pool');
  assert.doesNotThrow(() => operatorConfig(opts as OperatorFlags));
  // --cluster-pool-ipv4-cidr repeats; --cluster-pool-cidr is its alias (and repeats too).
  await program.parseAsync(
    ['node', 'tendril', 'operator', '--store-listen', 'a:1', '--cluster-pool-ipv4-cidr', '10.1.0.0/16', '--cluster-pool-ipv4-cidr', '10.2.0.0/16', '--cluster-pool-cidr', '10.3.0.0/16', '--cluster-pool-mask-size', '27'],
    { from: 'node' },
  );
  const cfg = operatorConfig(seen[1] as OperatorFlags);
  assert.deepEqual(cfg.pool, { cidrs: ['10.1.0.0/16', '10.2.0.0/16', '10.3.0.0/16'], maskSize: 27 });
});
