// Integration (issue #10, socket termination per service) on a 2-node lab brought up with socketLb: one pod is a
// backend of two services A and B (both select it, same pod IP:port). When it leaves A only — A's selector changes,
// A is deleted, A's port changes — the TCP connections socket LB made to it through A's frontend are destroyed
// (their owner sees ECONNABORTED at once), the ones it made through B's frontend and a connection dialled to the pod
// IP itself keep answering. The client runs on one node, the backend on the other, so the client node's agent does
// the termination while the backend stays in its maps (B still uses it).
// Root; the lab is the test's own (unique name) and is removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { labDown, labUp, podAdd, type LabPod } from '../src/lab/lab.js';
import { labPaths } from '../src/lab/paths.js';
import { labServiceAdd, labServiceDel, labServiceEndpoints, type LabServiceAdd } from '../src/lab/services.js';
import { until } from './lib/proc.js';
import { holderFinal, startHolder } from './lib/tcp-holder.js';

describe('socket termination per service on a 2-node lab', { concurrency: 1, timeout: 900_000 }, () => {
  const lab = `st${process.pid}`;
  let client: LabPod;
  let solo: LabPod;
  let clientNode = '';
  const holders: ChildProcessWithoutNullStreams[] = [];

  before(async () => {
    assert.equal(process.getuid?.(), 0, 'test/sock-lb-term-lab.test.ts needs root');
    const st = await labUp({ name: lab, nodes: 2, socketLb: true });
    solo = await podAdd(lab, 'solo', { node: st.nodes[1]!.name, namespace: 'term', labels: { app: 'solo' }, serve: [8081] });
    clientNode = st.nodes[0]!.name;
    client = await podAdd(lab, 'client', { node: clientNode, namespace: 'term', labels: { role: 'client' } });
  });

  /** The socket-LB lines of the client node's agent log (what it destroyed, what failed). */
  function sockLbLog(): string {
    const file = labPaths(lab).node(clientNode).logFile;
    return fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.includes('sock-lb')).slice(-10).join('\n');
  }

  after(async () => {
    for (const h of holders) h.kill('SIGKILL');
    await labDown(lab).catch(() => undefined);
  });

  /**
   * Services `a` (port pa) and `b` (port pb) both select the solo pod; two connections through each and one to the pod
   * IP; `leave(a)` makes the pod leave A only; A's two connections must end with ECONNABORTED, the rest answer.
   */
  async function sharedBackend(name: string, pa: number, pb: number, leave: (a: LabServiceAdd & { name: string; clusterIP: string }) => Promise<void>, explicit = false): Promise<void> {
    const spec = (port: number): LabServiceAdd => ({ namespace: 'term', selector: explicit ? {} : { app: 'solo' }, ports: [{ port, targetPort: 8081, protocol: 'TCP' }], type: 'ClusterIP' });
    const a = await labServiceAdd(lab, `${name}-a`, spec(pa));
    const b = await labServiceAdd(lab, `${name}-b`, spec(pb));
    if (explicit) for (const s of [a, b]) await labServiceEndpoints(lab, `term/${s.name}`, [{ ip: solo.ip, port: 8081 }]);
    const targets = [{ ip: a.clusterIP!, port: pa }, { ip: a.clusterIP!, port: pa }, { ip: b.clusterIP!, port: pb }, { ip: b.clusterIP!, port: pb }, { ip: solo.ip, port: 8081 }];
    const h = startHolder(client, { targets, timeout: 10_000 });
    holders.push(h.proc);
    await until(`the holder's connections answered (${h.stderr()})`, () => h.lines.some((l) => l['names']), 120_000);
    assert.deepEqual(h.lines.find((l) => l['names'])!['names'], ['solo', 'solo', 'solo', 'solo', 'solo']);
    await leave({ ...spec(pa), name: `${name}-a`, clusterIP: a.clusterIP! });
    await until(`the 2 connections through ${name}-a report an error`, () => [0, 1].every((i) => h.lines.some((l) => l['i'] === i)), 60_000).catch((err: Error) => {
      throw new Error(`${err.message}; holder: ${JSON.stringify(h.lines)}; client node's socket-LB log: ${sockLbLog()}`);
    });
    const final = await holderFinal(h);
    for (const l of h.lines.filter((x) => x['i'] !== undefined)) {
      assert.ok(l['i'] === 0 || l['i'] === 1, `only the connections through ${name}-a go: ${JSON.stringify(h.lines)}`);
      assert.equal(l['error'], 'ECONNABORTED', JSON.stringify(l));
    }
    assert.deepEqual(final, [null, null, 'solo', 'solo', 'solo'], `${name}-b's and the direct connection still answer`);
  }

  test('A\'s selector changes: A\'s connections are destroyed, B\'s and the direct one live on', async () => {
    await sharedBackend('sel', 83, 84, async (a) => {
      await labServiceAdd(lab, a.name, { ...a, selector: { app: 'nobody' } });
    });
  });

  test('A is deleted: A\'s connections are destroyed, B\'s and the direct one live on', async () => {
    await sharedBackend('del', 85, 86, async (a) => {
      await labServiceDel(lab, `term/${a.name}`);
    });
  });

  test('A\'s port changes: the connections through A\'s old frontend are destroyed, B\'s and the direct one live on', async () => {
    await sharedBackend('port', 87, 88, async (a) => {
      await labServiceAdd(lab, a.name, { ...a, ports: [{ port: 97, targetPort: 8081, protocol: 'TCP' }] });
    });
  });

  test('A without a selector loses its explicit backend (EndpointSlices): A\'s connections are destroyed, B\'s and the direct one live on', async () => {
    await sharedBackend('eps', 89, 90, async (a) => {
      await labServiceEndpoints(lab, `term/${a.name}`, []);
    }, true);
  });
});
