// Unit tests of `tendril ipam list` rows and the IPAM part of `tendril status --verbose`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ipamRows } from './ipam-cmd.js';
import { formatStatus } from './node-cmd.js';
import type { NodeView, StatusView } from '../agent/index.js';

const status = {
  tendril: { state: 'Ok', message: '', version: '0.1.0', node: 'ctr', 'uptime-seconds': 5 },
  ready: true,
  'cni-config': null,
  store: null,
  ipam: {
    'pod-cidr': '10.0.0.0/28',
    used: 16,
    capacity: 28,
    pools: {
      default: {
        mode: 'cluster-pool',
        'pre-allocate': 4,
        requested: 2,
        waiting: null,
        cidrs: [
          { cidr: '10.0.0.0/28', used: 14, capacity: 14, draining: false },
          { cidr: '10.0.0.32/28', used: 2, capacity: 14, draining: true },
        ],
      },
    },
    allocations: [{ ip: '10.0.0.1', owner: 'router', endpoint: null }],
  },
  'attach-mode': 'tcx',
  'device-mode': 'veth',
  routing: { mode: 'tunnel', 'native-device': 'eth0' },
  nodes: 2,
  monitor: null,
  hubble: null,
  endpoints: 1,
  health: { ip: null, endpoint: null },
} as unknown as StatusView;

test('ipamRows() lists every CIDR of every node, with use where the node answered', () => {
  const nodes = [
    { name: 'ctr', addresses: ['192.168.0.1'], podCIDRs: ['10.0.0.0/28', '10.0.0.32/28'], source: 'local' },
    { name: 'w1', addresses: ['192.168.0.2'], podCIDRs: ['10.0.0.16/28'], source: 'cluster-store' },
  ] as NodeView[];
  assert.deepEqual(ipamRows(nodes, new Map([['ctr', status]])), [
    { pool: 'default', cidr: '10.0.0.0/28', node: 'ctr', used: 14, total: 14 },
    { pool: 'default', cidr: '10.0.0.32/28', node: 'ctr', used: 2, total: 14 },
    { pool: 'default', cidr: '10.0.0.16/28', node: 'w1', used: null, total: null },
  ]);
});

test('status shows every CIDR, and --verbose each pool\'s CIDRs with used/total', () => {
  const plain = formatStatus(status, false);
  assert.match(plain, /IPv4: 16\/28 allocated from 10\.0\.0\.0\/28, 10\.0\.0\.32\/28,/);
  assert.doesNotMatch(plain, /IPAM pool/);
  const verbose = formatStatus(status, true);
  assert.match(verbose, /IPAM pool default \(cluster-pool, 2 CIDR\(s\) requested, pre-allocate 4\):\n {2}10\.0\.0\.0\/28 +14\/14 used\n {2}10\.0\.0\.32\/28 +2\/14 used {3}\(draining\)\n/);
});
