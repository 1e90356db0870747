// Unit tests of parseCniCall: every validation path yields its CNI code and a message saying what was wrong.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CniError } from './errors.js';
import { parseCniArgs, parseCniCall } from './parse.js';

const CONF = { cniVersion: '1.0.0', name: 'tendril', type: 'tendril-cni' };

function headers(over: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    'x-cni-command': 'ADD',
    'x-cni-containerid': 'c0ffee',
    'x-cni-netns': '/var/run/netns/pod1',
    'x-cni-ifname': 'eth0',
    'x-cni-path': '/opt/cni/bin:/usr/lib/cni',
    ...over,
  };
}

function rejects(h: Record<string, string | undefined>, body: string, code: number, msg: RegExp): void {
  assert.throws(
    () => parseCniCall(h, body),
    (err: unknown) => {
      assert.ok(err instanceof CniError, `expected CniError, got ${String(err)}`);
      assert.equal(err.code, code, `code of "${err.message}"`);
      assert.match(err.message, msg);
      return true;
    },
  );
}

test('parseCniCall() reads env headers, CNI_ARGS, CNI_PATH and the config', () => {
  const call = parseCniCall(
    headers({ 'x-cni-args': 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=curl' }),
    JSON.stringify({ ...CONF, mtu: 1450, 'agent-socket': '/run/t.sock', args: { tendril: { labels: { app: 'curl' } } } }),
  );
  assert.equal(call.command, 'ADD');
  assert.equal(call.containerId, 'c0ffee');
  assert.equal(call.netns, '/var/run/netns/pod1');
  assert.equal(call.ifname, 'eth0');
  assert.deepEqual(call.args, { IgnoreUnknown: '1', K8S_POD_NAMESPACE: 'default', K8S_POD_NAME: 'curl' });
  assert.deepEqual(call.path, ['/opt/cni/bin', '/usr/lib/cni']);
  assert.equal(call.config.mtu, 1450);
  assert.equal(call.config['agent-socket'], '/run/t.sock');
  assert.deepEqual(call.labels, { app: 'curl' });
});

test('parseCniCall() matches header names case-insensitively and percent-decodes values', () => {
  const call = parseCniCall(
    { 'X-Cni-Command': 'DEL', 'X-CNI-CONTAINERID': 'abc', 'x-cni-ifname': 'eth0', 'x-cni-args': 'A=50%25%0Ax' },
    JSON.stringify(CONF),
  );
  assert.equal(call.command, 'DEL');
  assert.equal(call.containerId, 'abc');
  assert.equal(call.netns, '');
  assert.deepEqual(call.args, { A: '50%\nx' });
});

test('parseCniCall() code 4: missing or unknown CNI_COMMAND', () => {
  rejects(headers({ 'x-cni-command': undefined }), JSON.stringify(CONF), 4, /^invalid environment: CNI_COMMAND is not set$/);
  rejects(headers({ 'x-cni-command': 'UP' }), JSON.stringify(CONF), 4, /unknown CNI_COMMAND "UP"/);
});

test('parseCniCall() code 4: env required per verb', () => {
  rejects(headers({ 'x-cni-netns': undefined }), JSON.stringify(CONF), 4, /CNI_NETNS is not set \(required for ADD\)/);
  rejects(headers({ 'x-cni-containerid': '' }), JSON.stringify(CONF), 4, /CNI_CONTAINERID is not set/);
  rejects(headers({ 'x-cni-ifname': undefined }), JSON.stringify(CONF), 4, /CNI_IFNAME is not set/);
  rejects(
    headers({ 'x-cni-command': 'CHECK', 'x-cni-netns': undefined }),
    JSON.stringify({ ...CONF, prevResult: {} }),
    4,
    /CNI_NETNS is not set \(required for CHECK\)/,
  );
  // DEL may come without a netns (the sandbox may be gone); STATUS and GC need no attachment at all.
  assert.equal(parseCniCall(headers({ 'x-cni-command': 'DEL', 'x-cni-netns': undefined }), JSON.stringify(CONF)).netns, '');
  const v11 = JSON.stringify({ ...CONF, cniVersion: '1.1.0' });
  assert.equal(parseCniCall({ 'x-cni-command': 'STATUS' }, v11).command, 'STATUS');
  assert.equal(parseCniCall({ 'x-cni-command': 'GC' }, v11).command, 'GC');
});

test('parseCniCall() code 4: container ID and interface name rules', () => {
  const body = JSON.stringify(CONF);
  rejects(headers({ 'x-cni-containerid': '-abc' }), body, 4, /CNI_CONTAINERID "-abc" must start with a letter or digit/);
  rejects(headers({ 'x-cni-containerid': 'a b' }), body, 4, /CNI_CONTAINERID "a b"/);
  rejects(headers({ 'x-cni-ifname': 'a234567890123456' }), body, 4, /CNI_IFNAME "a234567890123456" is longer than 15 bytes/);
  rejects(headers({ 'x-cni-ifname': 'a/b' }), body, 4, /CNI_IFNAME "a\/b" must not contain "\/"/);
  rejects(headers({ 'x-cni-ifname': '.' }), body, 4, /CNI_IFNAME "\." is not a valid interface name/);
  rejects(headers({ 'x-cni-ifname': '..' }), body, 4, /CNI_IFNAME "\.\." is not a valid interface name/);
  rejects(headers({ 'x-cni-ifname': 'eth 0' }), body, 4, /must not contain/);
  // 15 bytes is the limit, not 15 characters
  assert.equal(parseCniCall(headers({ 'x-cni-ifname': 'a23456789012345' }), body).ifname, 'a23456789012345');
});

test('parseCniCall() code 4: malformed CNI_ARGS and undecodable header values', () => {
  rejects(headers({ 'x-cni-args': 'A=1;broken' }), JSON.stringify(CONF), 4, /CNI_ARGS entry "broken" is not KEY=VALUE/);
  rejects(headers({ 'x-cni-args': '%FF' }), JSON.stringify(CONF), 4, /CNI_ARGS is not valid UTF-8/);
});

test('parseCniCall() code 8: relative netns path', () => {
  rejects(headers({ 'x-cni-netns': 'netns/pod1' }), JSON.stringify(CONF), 8, /invalid network namespace "netns\/pod1": not an absolute path/);
});

test('parseCniCall() code 6: stdin is not a JSON object', () => {
  rejects(headers(), '{"cniVersion": "1.0.0",', 6, /^decoding failure: network config on stdin is not JSON: /);
  rejects(headers(), '', 6, /is not JSON/);
  rejects(headers(), '[1,2]', 6, /^decoding failure: network config on stdin is not a JSON object$/);
});

test('parseCniCall() code 7: missing or malformed required keys', () => {
  const { cniVersion: _v, ...noVersion } = CONF;
  rejects(headers(), JSON.stringify(noVersion), 7, /^invalid network config: "cniVersion" is missing$/);
  rejects(headers(), JSON.stringify({ ...CONF, cniVersion: 1 }), 7, /"cniVersion" must be a string/);
  const { name: _n, ...noName } = CONF;
  rejects(headers(), JSON.stringify(noName), 7, /^invalid network config: "name" is missing$/);
  rejects(headers(), JSON.stringify({ ...CONF, name: '_bad' }), 7, /"name" "_bad" must start with a letter or digit/);
  const { type: _t, ...noType } = CONF;
  rejects(headers(), JSON.stringify(noType), 7, /^invalid network config: "type" is missing$/);
  rejects(headers(), JSON.stringify({ ...CONF, mtu: 20 }), 7, /"mtu" must be an integer from 68 to 65535, got 20/);
  rejects(headers(), JSON.stringify({ ...CONF, 'agent-socket': 5 }), 7, /"agent-socket" must be a non-empty string/);
  rejects(headers(), JSON.stringify({ ...CONF, args: [] }), 7, /"args" must be an object/);
  rejects(headers(), JSON.stringify({ ...CONF, args: { tendril: { labels: { app: 1 } } } }), 7, /"args.tendril.labels.app" must be a string/);
  rejects(headers({ 'x-cni-command': 'CHECK' }), JSON.stringify(CONF), 7, /"prevResult" is required for CHECK/);
  rejects(
    { 'x-cni-command': 'GC' },
    JSON.stringify({ ...CONF, cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'a' }] }),
    7,
    /"cni.dev\/valid-attachments"\[0\] must be \{"containerID": string, "ifname": string\}/,
  );
});

test('parseCniCall() code 1: unsupported cniVersion, and verbs newer than the config version', () => {
  rejects(headers(), JSON.stringify({ ...CONF, cniVersion: '0.2.0' }), 1, /^incompatible CNI version: "0.2.0" is not supported \(supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\)$/);
  rejects(
    headers({ 'x-cni-command': 'CHECK' }),
    JSON.stringify({ ...CONF, cniVersion: '0.3.1', prevResult: {} }),
    1,
    /CHECK needs cniVersion 0.4.0 or later, the config says "0.3.1"/,
  );
  rejects({ 'x-cni-command': 'STATUS' }, JSON.stringify(CONF), 1, /STATUS needs cniVersion 1.1.0 or later/);
  rejects({ 'x-cni-command': 'GC' }, JSON.stringify(CONF), 1, /GC needs cniVersion 1.1.0 or later/);
});

test('parseCniCall() code 2: prevResult on ADD (tendril must come first)', () => {
  rejects(headers(), JSON.stringify({ ...CONF, prevResult: { ips: [] } }), 2, /unsupported field in network config: "prevResult"/);
});

test('parseCniCall() GC reads the valid attachments under either libcni key, null as none', () => {
  const base = { ...CONF, cniVersion: '1.1.0' };
  const a = [{ containerID: 'c1', ifname: 'eth0' }];
  assert.deepEqual(parseCniCall({ 'x-cni-command': 'GC' }, JSON.stringify({ ...base, 'cni.dev/valid-attachments': a })).config['cni.dev/valid-attachments'], a);
  assert.deepEqual(parseCniCall({ 'x-cni-command': 'GC' }, JSON.stringify({ ...base, 'cni.dev/attachments': a })).config['cni.dev/valid-attachments'], a);
  assert.deepEqual(parseCniCall({ 'x-cni-command': 'GC' }, JSON.stringify({ ...base, 'cni.dev/valid-attachments': null })).config['cni.dev/valid-attachments'], []);
});

test('parseCniCall() VERSION needs only a cniVersion', () => {
  const call = parseCniCall({ 'x-cni-command': 'VERSION' }, '{"cniVersion":"0.4.0"}');
  assert.equal(call.command, 'VERSION');
  assert.equal(call.config.cniVersion, '0.4.0');
});

test('parseCniArgs() splits K=V pairs, keeps "=" inside values, ignores empty pairs', () => {
  assert.deepEqual(parseCniArgs(''), {});
  assert.deepEqual(parseCniArgs('A=1;;B=x=y;'), { A: '1', B: 'x=y' });
});

test('parseCniCall() reads named container ports from args.tendril.ports, and rejects malformed ones (code 7)', () => {
  const call = parseCniCall(
    headers(),
    JSON.stringify({ ...CONF, args: { tendril: { ports: [{ name: 'http', containerPort: 80 }, { name: 'dns', containerPort: 53, protocol: 'UDP' }, { containerPort: 9 }] } } }),
  );
  assert.deepEqual(call.namedPorts, [
    { name: 'http', port: 80, protocol: 'TCP' },
    { name: 'dns', port: 53, protocol: 'UDP' },
  ]);
  const bad = (ports: unknown, msg: RegExp): void => rejects(headers(), JSON.stringify({ ...CONF, args: { tendril: { ports } } }), 7, msg);
  bad({}, /must be an array/);
  bad([{ name: 'http', containerPort: 0 }], /\[0\]\.containerPort must be an integer 1-65535/);
  bad([{ name: 'http', containerPort: 80, protocol: 'ICMP' }], /protocol must be TCP, UDP or SCTP/);
  bad([{ name: 'HTTP_1', containerPort: 80 }], /not a valid port name/);
  bad([{ name: '8080', containerPort: 80 }], /not a valid port name/);
  bad([{ name: 'a', containerPort: 1 }, { name: 'a', containerPort: 2 }], /declared twice/);
});

test('parseCniCall() code 7: pod labels must follow Kubernetes label syntax', () => {
  const withLabels = (labels: Record<string, string>) => JSON.stringify({ ...CONF, args: { tendril: { labels } } });
  assert.deepEqual(parseCniCall(headers(), withLabels({ 'app.kubernetes.io/name': 'web', tier: '' })).labels, { 'app.kubernetes.io/name': 'web', tier: '' });
  rejects(headers(), withLabels({ app: 'a,b' }), 7, /Pod label "app" has an invalid value "a,b"/);
  rejects(headers(), withLabels({ 'bad key': 'x' }), 7, /Pod label key "bad key" is not a valid label key/);
});

test('parseCniCall() reads a static address from args.cni.ips, runtimeConfig.ips or CNI_ARGS IP=; one IPv4 only', () => {
  const body = (extra: Record<string, unknown>): string => JSON.stringify({ ...CONF, ...extra });
  assert.equal(parseCniCall(headers(), body({ args: { cni: { ips: ['10.0.0.7/24'] } } })).staticIP, '10.0.0.7');
  assert.equal(parseCniCall(headers(), body({ runtimeConfig: { ips: ['10.0.0.8'] } })).staticIP, '10.0.0.8');
  assert.equal(parseCniCall(headers({ 'x-cni-args': 'IgnoreUnknown=1;IP=10.0.0.9' }), body({})).staticIP, '10.0.0.9');
  assert.equal(parseCniCall(headers({ 'x-cni-args': 'IP=10.0.0.9' }), body({ args: { cni: { ips: ['10.0.0.9/32'] } } })).staticIP, '10.0.0.9', 'the same address twice is one');
  assert.equal(parseCniCall(headers(), body({})).staticIP, undefined);
  assert.equal(parseCniCall(headers({ 'x-cni-command': 'DEL', 'x-cni-args': 'IP=10.0.0.9' }), body({})).staticIP, undefined, 'only ADD asks for one');
  rejects(headers({ 'x-cni-args': 'IP=10.0.0.1' }), body({ args: { cni: { ips: ['10.0.0.2'] } } }), 7, /asks for 2 static addresses \(10\.0\.0\.2, 10\.0\.0\.1\): Tendril gives a pod exactly one IPv4 address/);
  rejects(headers(), body({ args: { cni: { ips: ['fd00::1'] } } }), 7, /"args\.cni\.ips" asks for "fd00::1": the cluster is IPv4-only/);
  rejects(headers(), body({ args: { cni: { ips: ['10.0.0.300'] } } }), 7, /asks for "10\.0\.0\.300": expected an IPv4 address/);
  rejects(headers(), body({ runtimeConfig: { ips: '10.0.0.1' } }), 7, /"runtimeConfig\.ips" must be an array of IP address strings/);
});

test('parseCniCall() reads the service account from args.tendril.serviceAccount and rejects an invalid name (code 7)', () => {
  const call = parseCniCall(headers(), JSON.stringify({ ...CONF, args: { tendril: { serviceAccount: 'builder' } } }));
  assert.equal(call.serviceAccount, 'builder');
  assert.equal(parseCniCall(headers(), JSON.stringify(CONF)).serviceAccount, undefined);
  rejects(headers(), JSON.stringify({ ...CONF, args: { tendril: { serviceAccount: 'Not_Valid' } } }), 7, /"args.tendril.serviceAccount" "Not_Valid" is not a valid service account name/);
});
