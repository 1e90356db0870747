// Unit tests of serveCni() and tendrilConflist(): a real HTTP server on a unix socket in a temp dir, no privileges.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { tendrilConflist } from './conflist.js';
import { serveCni } from './http.js';
import { CniHandler, type CniBackend } from './plugin.js';

const backend: CniBackend = {
  status: () => ({ ready: false, reason: 'starting' }),
  netConfig: () => ({ routerIP: '10.9.0.1', mtu: 1500 }),
  allocateIP: () => Promise.reject(new Error('not used')),
  pool: () => undefined,
  releaseIP: () => Promise.resolve(),
  attachmentIPs: () => [],
  listAttachmentIPs: () => [],
  createEndpoint: () => Promise.reject(new Error('not used')),
  findEndpoint: () => undefined,
  deleteEndpoint: () => Promise.resolve(),
  listEndpoints: () => [],
};

let dir = '';
let sock = '';
let server: http.Server | undefined;

before(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-cni-http-'));
  sock = path.join(dir, 'agent.sock');
  const handler = new CniHandler(backend);
  server = http.createServer((req, res) => void serveCni(handler, req, res));
  await new Promise<void>((r) => server!.listen(sock, r));
});

after(() => {
  server?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function post(headers: Record<string, string>, body: string): Promise<{ status: number; exit: string | undefined; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: sock, method: 'POST', path: '/v1/cni', headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, exit: res.headers['x-cni-exit-code'] as string | undefined, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

test('serveCni() answers with X-Cni-Exit-Code and the CNI error JSON', async () => {
  const r = await post({ 'X-Cni-Command': 'STATUS' }, JSON.stringify({ cniVersion: '1.1.0', name: 'tendril', type: 'tendril-cni' }));
  assert.equal(r.status, 503);
  assert.equal(r.exit, '1');
  assert.deepEqual(JSON.parse(r.body), { cniVersion: '1.1.0', code: 50, msg: 'Tendril agent is not ready', details: 'starting' });
});

test('serveCni() decodes percent-encoded headers before validating them', async () => {
  // "%2F" is "/" once decoded, which an interface name must not contain.
  const r = await post(
    { 'X-Cni-Command': 'DEL', 'X-Cni-Containerid': 'c1', 'X-Cni-Ifname': 'a%2Fb' },
    JSON.stringify({ cniVersion: '1.0.0', name: 'tendril', type: 'tendril-cni' }),
  );
  assert.equal(r.status, 400);
  assert.equal(r.exit, '1');
  assert.match(JSON.parse(r.body).msg as string, /CNI_IFNAME "a\/b" must not contain "\/"/);
});

test('tendrilConflist() names the plugin type and carries the agent socket', () => {
  const list = JSON.parse(tendrilConflist({ agentSocket: '/var/run/tendril/n1/tendril.sock', mtu: 1450 })) as Record<string, unknown>;
  assert.deepEqual(list, {
    cniVersion: '1.1.0',
    name: 'tendril',
    plugins: [{ type: 'tendril-cni', 'agent-socket': '/var/run/tendril/n1/tendril.sock', mtu: 1450 }],
  });
});
