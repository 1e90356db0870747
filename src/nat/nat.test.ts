// Unit tests of masquerading's configuration: flags, the ip-masq-agent file and watcher, the node's ephemeral range,
// the iptables fallback's rules (no privileges).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEFAULT_NON_MASQ_CIDRS,
  IpMasqWatcher,
  LINK_LOCAL_CIDR,
  NatError,
  effectiveNonMasqCidrs,
  ephemeralRangeFor,
  masqConfig,
  masqMode,
  masqRules,
  parseIpMasqConfig,
} from './index.js';

test('flags: Cilium defaults, and each bad value named', () => {
  const c = masqConfig({});
  assert.deepEqual(
    [c.ipv4Masquerade, c.bpfMasquerade, c.ipMasqAgent, c.portMin, c.portMax, c.ipMasqAgentConfigPath, c.interfaces, c.nativeRoutingCidr],
    [true, true, false, 32768, 60999, '/etc/tendril/ip-masq-agent.yaml', [], undefined],
  );
  assert.equal(masqMode(c, 'eth0'), 'bpf');
  assert.equal(masqMode(masqConfig({ enableBpfMasquerade: 'false' }), 'eth0'), 'iptables');
  assert.equal(masqMode(masqConfig({ enableIpv4Masquerade: 'false' }), 'eth0'), 'off');
  assert.equal(masqMode(masqConfig({ masqueradeInterfaces: 'eth1' }), 'eth0'), 'bpf');
  assert.equal(masqConfig({ ipv4NativeRoutingCidr: '10.1.2.3/16' }).nativeRoutingCidr, '10.1.0.0/16');
  assert.deepEqual(masqConfig({ masqueradeInterfaces: 'eth0, eth1' }).interfaces, ['eth0', 'eth1']);
  for (const [o, re] of [
    [{ enableBpfMasquerade: 'yes' }, /--enable-bpf-masquerade "yes"/],
    [{ ipv4NativeRoutingCidr: '10.0.0.0/33' }, /--ipv4-native-routing-cidr/],
    [{ masqueradePortRange: '60000-40000' }, /--masquerade-port-range "60000-40000"/],
    [{ masqueradePortRange: '80-90' }, /1024-65535/],
    [{ masqueradeInterfaces: 'eth 0' }, /"eth 0"/],
  ] as const) {
    assert.throws(() => masqConfig(o), (e: unknown) => e instanceof NatError && e.code === 'TENDRIL_ERR_NAT_CONFIG' && re.test(e.message));
  }
});

test('ip-masq-agent file: YAML or JSON, defaults when empty, link-local unless masqLinkLocal, errors say where', () => {
  assert.deepEqual(parseIpMasqConfig('nonMasqueradeCIDRs:\n  - 10.0.0.0/16\nmasqLinkLocal: true\n', 'f'), { nonMasqueradeCIDRs: ['10.0.0.0/16'], masqLinkLocal: true });
  assert.deepEqual(parseIpMasqConfig('{"nonMasqueradeCIDRs": ["10.0.5.1/16"]}', 'f'), { nonMasqueradeCIDRs: ['10.0.0.0/16'], masqLinkLocal: false });
  assert.deepEqual(effectiveNonMasqCidrs(parseIpMasqConfig('', 'f')), [...DEFAULT_NON_MASQ_CIDRS, LINK_LOCAL_CIDR]);
  assert.deepEqual(effectiveNonMasqCidrs(undefined), [...DEFAULT_NON_MASQ_CIDRS, LINK_LOCAL_CIDR]);
  assert.deepEqual(effectiveNonMasqCidrs({ nonMasqueradeCIDRs: [], masqLinkLocal: true }), [...DEFAULT_NON_MASQ_CIDRS]);
  assert.deepEqual(effectiveNonMasqCidrs({ nonMasqueradeCIDRs: ['10.0.0.0/16'], masqLinkLocal: false }), ['10.0.0.0/16', LINK_LOCAL_CIDR]);
  assert.equal(DEFAULT_NON_MASQ_CIDRS.length, 11);
  for (const [text, re] of [
    ['nonMasqueradeCIDRs: [10.0.0.0/40]', /nonMasqueradeCIDRs\[0\]/],
    ['nonMasqueradeCIDRs: 10.0.0.0/8', /not a list/],
    ['masqLinkLocal: maybe', /masqLinkLocal/],
    ['nonMasqueradeCidrs: []', /unknown field "nonMasqueradeCidrs"/],
    ['[1, 2]', /mapping/],
    ['a: [', /Invalid ip-masq-agent config \/etc\/x/],
  ] as const) {
    assert.throws(() => parseIpMasqConfig(text, '/etc/x'), (e: unknown) => e instanceof NatError && e.code === 'TENDRIL_ERR_IPMASQ_CONFIG' && re.test(e.message), text);
  }
});

test('the watcher applies a changed file, keeps the previous set on a bad one, and stops', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-ipmasq-'));
  const file = path.join(dir, 'ip-masq-agent.yaml');
  const applied: string[][] = [];
  const errors: string[] = [];
  const w = new IpMasqWatcher(file, (c) => applied.push(c), (e) => errors.push(e.message), 20);
  try {
    w.start();
    assert.deepEqual(applied, [[...DEFAULT_NON_MASQ_CIDRS, LINK_LOCAL_CIDR]]);
    assert.equal(w.state.fromFile, false);
    const until = async (cond: () => boolean): Promise<void> => {
      const end = Date.now() + 10_000;
      while (!cond()) {
        if (Date.now() > end) throw new Error('timed out');
        await new Promise((r) => setTimeout(r, 20));
      }
    };
    fs.writeFileSync(file + '.tmp', 'nonMasqueradeCIDRs: [10.0.0.0/16]\nmasqLinkLocal: true\n');
    fs.renameSync(file + '.tmp', file);
    await until(() => applied.length === 2);
    assert.deepEqual(applied[1], ['10.0.0.0/16']);
    fs.writeFileSync(file, 'nonMasqueradeCIDRs: [nope]\n');
    await until(() => errors.length > 0);
    assert.match(errors[0]!, /nonMasqueradeCIDRs\[0\]/);
    assert.deepEqual(w.state.cidrs, ['10.0.0.0/16']);
    assert.match(w.state.error ?? '', /nope/);
    assert.equal(applied.length, 2);
  } finally {
    w.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a bad file at start: the error is reported and Cilium\'s defaults apply', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tdl-ipmasq-'));
  const file = path.join(dir, 'ip-masq-agent.yaml');
  fs.writeFileSync(file, 'masqLinkLocal: 3\n');
  const applied: string[][] = [];
  const errors: string[] = [];
  const w = new IpMasqWatcher(file, (c) => applied.push(c), (e) => errors.push(e.message), 20);
  try {
    w.start();
    assert.deepEqual(applied, [[...DEFAULT_NON_MASQ_CIDRS, LINK_LOCAL_CIDR]]);
    assert.equal(errors.length, 1);
    assert.match(w.state.error ?? '', /masqLinkLocal/);
  } finally {
    w.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('the node ephemeral range moves out of the SNAT range, above it when there is room', () => {
  assert.deepEqual(ephemeralRangeFor({ lo: 32768, hi: 60999 }, 32768, 60999), { lo: 61000, hi: 65535 });
  assert.deepEqual(ephemeralRangeFor({ lo: 61000, hi: 65535 }, 32768, 60999), { lo: 61000, hi: 65535 });
  assert.deepEqual(ephemeralRangeFor({ lo: 32768, hi: 60999 }, 40000, 65000), { lo: 1024, hi: 39999 });
  assert.deepEqual(ephemeralRangeFor({ lo: 1024, hi: 2000 }, 32768, 60999), { lo: 1024, hi: 2000 });
  assert.throws(() => ephemeralRangeFor({ lo: 32768, hi: 60999 }, 1024, 65535), /no ephemeral port/);
});

test('iptables fallback: pod CIDR and excluded CIDRs return, the devices masquerade', () => {
  assert.deepEqual(masqRules({ podCidr: '172.20.0.0/24', devices: ['eth0'], exclude: ['10.0.0.0/16', '172.20.0.0/24'] }), [
    ['-A', 'TENDRIL_MASQ', '-d', '172.20.0.0/24', '-j', 'RETURN'],
    ['-A', 'TENDRIL_MASQ', '-d', '10.0.0.0/16', '-j', 'RETURN'],
    ['-A', 'TENDRIL_MASQ', '-o', 'eth0', '-j', 'MASQUERADE'],
  ]);
});
