// Unit tests of the masquerading views: `bpf nat list` lines and the status line (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { MasqStatus } from '../agent/index.js';
import { formatMasquerading, formatNatList } from './nat-cmd.js';

test('CLI: bpf nat list lines and the Masquerading status value in Cilium\'s shape', () => {
  const text = formatNatList([
    { proto: 'TCP', protocol: 6, direction: 'IN', src: '1.1.1.1', sport: 80, dst: '192.168.1.10', dport: 41370, xlate: 'XLATE_DST', toAddr: '10.0.1.42', toPort: 41370, age: 5 },
    { proto: 'TCP', protocol: 6, direction: 'OUT', src: '10.0.1.42', sport: 41370, dst: '1.1.1.1', dport: 80, xlate: 'XLATE_SRC', toAddr: '192.168.1.10', toPort: 41370, age: 5 },
  ]);
  assert.equal(
    text,
    'TCP IN 1.1.1.1:80 -> 192.168.1.10:41370 XLATE_DST 10.0.1.42:41370 Created=5sec ago\n' +
      'TCP OUT 10.0.1.42:41370 -> 1.1.1.1:80 XLATE_SRC 192.168.1.10:41370 Created=5sec ago\n',
  );
  const base = { mode: 'BPF', devices: ['eth0'], 'native-routing-cidr': '10.0.0.0/16', 'port-range': '32768-60999', 'node-ephemeral-range': '61000-65535', 'ip-masq-agent': { enabled: false as const } } satisfies MasqStatus;
  assert.equal(formatMasquerading(base), 'BPF   [eth0]   10.0.0.0/16 [IPv4: Enabled, IPv6: Disabled]');
  assert.equal(formatMasquerading({ ...base, 'native-routing-cidr': null, mode: 'iptables' }), 'iptables   [eth0] [IPv4: Enabled, IPv6: Disabled]');
  assert.equal(formatMasquerading(null), 'Disabled');
});
