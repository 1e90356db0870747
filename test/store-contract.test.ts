// Contract of the cluster state store: one suite run against every backend (local over a unix socket, local over
// TCP, etcd), each a real server process on loopback that the tests kill and restart. No root needed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EtcdStore, StoreError, openStore, type Kind, type Store, type WatchEvent, type WatchHandle } from '../src/store/index.js';
import { sleep } from './lib/proc.js';
import { until } from './lib/proc.js';
import { freePort } from './lib/wait.js';

const STORE_MODULE = fileURLToPath(new URL('../src/store/index.js', import.meta.url));
const HISTORY_LIMIT = 20;
const CLIENT_OPTS = { connectTimeoutMs: 20_000, requestTimeoutMs: 3000, maxBackoffMs: 300, livenessMs: 1000 };

/** A store server the suite can start, kill and start again on the same address and data dir. */
interface Backend {
  readonly name: string;
  readonly url: string;
  start(): Promise<void>;
  /** SIGKILL: no chance to flush anything, as a crash. */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT: a server that hangs without closing its connections. */
  pause(): void;
  resume(): void;
  /** Makes revisions <= `before` unavailable to new watches. */
  forgetHistory(store: Store, before: number): Promise<void>;
  cleanup(): Promise<void>;
}

async function killChild(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGKILL');
  await exited;
}

/** The local store server in a child process, as the operator would host it. */
function localBackend(tmp: string, transport: 'unix' | 'tcp'): Backend {
  const dataDir = path.join(tmp, 'data');
  const socket = path.join(tmp, 'store.sock');
  let port = 0;
  let child: ChildProcess | undefined;
  const script = `
    const { LocalStoreServer } = await import(process.env.TDL_MODULE);
    const s = new LocalStoreServer({ dataDir: process.env.TDL_DATA, historyLimit: Number(process.env.TDL_HISTORY), keepaliveMs: 500 });
    await s.listen(process.env.TDL_SOCKET ? { socket: process.env.TDL_SOCKET } : { host: '127.0.0.1', port: Number(process.env.TDL_PORT) });
    process.stdout.write('ready ' + s.url + '\\n');
  `;
  const backend = {
    name: `local (${transport})`,
    url: '',
    async start(): Promise<void> {
      if (transport === 'tcp' && port === 0) port = await freePort();
      const env: NodeJS.ProcessEnv = { ...process.env, TDL_MODULE: STORE_MODULE, TDL_DATA: dataDir, TDL_HISTORY: String(HISTORY_LIMIT) };
      if (transport === 'unix') env['TDL_SOCKET'] = socket;
      else env['TDL_PORT'] = String(port);
      const c = spawn(process.execPath, ['--input-type=module', '-e', script], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      child = c;
      let out = '';
      let err = '';
      c.stderr?.on('data', (d: Buffer) => (err += d.toString()));
      await new Promise<void>((resolve, reject) => {
        c.stdout?.on('data', (d: Buffer) => {
          out += d.toString();
          const m = /ready (\S+)\n/.exec(out);
          if (m?.[1]) {
            backend.url = m[1];
            resolve();
          }
        });
        c.once('exit', (code) => reject(new Error(`local store server exited (${code}): ${err}`)));
      });
    },
    kill: () => killChild(child),
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    async forgetHistory(store: Store): Promise<void> {
      // Push the bounded history past `before`.
      for (let i = 0; i < HISTORY_LIMIT + 5; i++) await store.put('IPAMState', 'filler', { i });
    },
    async cleanup(): Promise<void> {
      await killChild(child);
    },
  };
  return backend;
}

/** Debian's etcd on loopback ports, with its own data dir. */
function etcdBackend(tmp: string): Backend {
  let child: ChildProcess | undefined;
  let args: string[] = [];
  let clientPort = 0;
  const backend = {
    name: 'etcd',
    url: '',
    async start(): Promise<void> {
      if (clientPort === 0) {
        clientPort = await freePort();
        const peer = `http://127.0.0.1:${await freePort()}`;
        const client = `http://127.0.0.1:${clientPort}`;
        args = [
          '--data-dir', path.join(tmp, 'etcd'), '--name', 't',
          '--listen-client-urls', client, '--advertise-client-urls', client,
          '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `t=${peer}`,
        ];
        backend.url = `etcd://127.0.0.1:${clientPort}`;
      }
      const log = fs.openSync(path.join(tmp, 'etcd.log'), 'a');
      const c = spawn('etcd', args, { stdio: ['ignore', log, log] });
      fs.closeSync(log);
      child = c;
      let exited = false;
      c.once('exit', () => (exited = true));
      c.once('error', () => (exited = true));
      const probe = new EtcdStore({ host: '127.0.0.1', port: clientPort }, { connectTimeoutMs: 0 });
      try {
        await until('etcd to answer', async () => {
          if (exited) throw new Error(`etcd exited: ${fs.readFileSync(path.join(tmp, 'etcd.log'), 'utf8').slice(-2000)}`);
          return (await probe.ping()).ok;
        });
      } finally {
        await probe.close();
      }
    },
    kill: () => killChild(child),
    pause: () => void child?.kill('SIGSTOP'),
    resume: () => void child?.kill('SIGCONT'),
    async forgetHistory(store: Store, before: number): Promise<void> {
      await store.put('IPAMState', 'filler', { compact: true });
      assert.ok(store instanceof EtcdStore);
      await store.compact(before + 1);
    },
    async cleanup(): Promise<void> {
      await killChild(child);
    },
  };
  return backend;
}

/** Collects the events of one watch, filtered to names starting with `prefix` (tests share kinds). */
function collect(store: Store, kind: Kind, fromRevision: number, prefix: string) {
  const events: WatchEvent<unknown>[] = [];
  const connection: boolean[] = [];
  let resync: string | undefined;
  const handle: WatchHandle = store.watch(kind, {
    fromRevision,
    onEvent: (ev) => {
      const name = ev.type === 'put' ? ev.resource.name : ev.name;
      if (name.startsWith(prefix)) events.push(ev);
    },
    onResync: (reason) => (resync = reason),
    onConnection: (c) => connection.push(c),
  });
  return {
    events,
    connection,
    get resync() {
      return resync;
    },
    handle,
    summary: () => events.map((e) => (e.type === 'put' ? `put ${e.resource.name}@${e.resource.revision}` : `delete ${e.name}@${e.revision}`)),
    waitCount: (n: number) => until(`${n} events (have ${events.length})`, () => events.length >= n),
  };
}

function isStoreError(code: string) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof StoreError, `expected StoreError, got ${String(err)}`);
    assert.equal(err.code, code);
    return true;
  };
}

function contract(makeBackend: (tmp: string) => Backend): void {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-store-`));
  const backend = makeBackend(tmp);
  const clients: Store[] = [];
  const open = (): Store => {
    const s = openStore(backend.url, CLIENT_OPTS);
    clients.push(s);
    return s;
  };
  let store: Store;

  describe(`store contract: ${backend.name}`, { timeout: 180_000 }, () => {
    before(async () => {
      await backend.start();
      store = open();
    });
    after(async () => {
      for (const c of clients) await c.close();
      await backend.cleanup();
      fs.rmSync(tmp, { recursive: true, force: true });
    });

    test('ping() reports the store revision', async () => {
      const p = await store.ping();
      assert.equal(p.ok, true);
      assert.equal(typeof p.revision, 'number');
    });

    test('get() of a missing resource returns undefined', async () => {
      assert.equal(await store.get('Node', 'missing-1'), undefined);
    });

    test('put() then get() returns the value and the revision put() reported', async () => {
      const spec = { name: 'pg-1', addresses: ['192.168.10.101'], podCIDRs: ['10.0.1.0/24'], routerIP: '10.0.1.1' };
      const r = await store.put('Node', 'pg-1', spec);
      assert.equal(r.kind, 'Node');
      assert.equal(r.name, 'pg-1');
      assert.deepEqual(r.value, spec);
      const g = await store.get('Node', 'pg-1');
      assert.deepEqual(g, r);
    });

    test('revisions increase store-wide, across kinds and names', async () => {
      const a = await store.put('Node', 'rev-a', { n: 1 });
      const b = await store.put('IPAMState', 'rev-b', { n: 2 });
      const c = await store.put('Node', 'rev-a', { n: 3 });
      assert.ok(b.revision > a.revision && c.revision > b.revision, `${a.revision} < ${b.revision} < ${c.revision}`);
      const { revision } = await store.list('Node');
      assert.ok(revision >= c.revision);
    });

    test('put() with expectedRevision 0 creates only', async () => {
      const r = await store.put('Node', 'cr-1', { v: 1 }, { expectedRevision: 0 });
      await assert.rejects(store.put('Node', 'cr-1', { v: 2 }, { expectedRevision: 0 }), (err: unknown) => {
        isStoreError('TENDRIL_ERR_STORE_CONFLICT')(err);
        assert.equal((err as StoreError).currentRevision, r.revision);
        assert.match((err as Error).message, /Cannot put Node "cr-1": expected revision 0/);
        return true;
      });
      assert.deepEqual((await store.get('Node', 'cr-1'))?.value, { v: 1 });
    });

    test('put() with a mismatching expectedRevision conflicts, a matching one succeeds', async () => {
      const r1 = await store.put('Node', 'cas-1', { v: 1 });
      const r2 = await store.put('Node', 'cas-1', { v: 2 }, { expectedRevision: r1.revision });
      assert.ok(r2.revision > r1.revision);
      await assert.rejects(store.put('Node', 'cas-1', { v: 3 }, { expectedRevision: r1.revision }), isStoreError('TENDRIL_ERR_STORE_CONFLICT'));
      await assert.rejects(store.put('Node', 'cas-missing', { v: 1 }, { expectedRevision: r1.revision }), isStoreError('TENDRIL_ERR_STORE_CONFLICT'));
      assert.deepEqual((await store.get('Node', 'cas-1'))?.value, { v: 2 });
    });

    test('concurrent creates with expectedRevision 0 from several clients: exactly one wins', async () => {
      const others = [open(), open(), open()];
      const results = await Promise.allSettled([store, ...others].map((c, i) => c.put('Node', 'race-1', { winner: i }, { expectedRevision: 0 })));
      const won = results.filter((r) => r.status === 'fulfilled');
      assert.equal(won.length, 1);
      for (const r of results) if (r.status === 'rejected') isStoreError('TENDRIL_ERR_STORE_CONFLICT')(r.reason);
      const stored = await store.get('Node', 'race-1');
      assert.ok(won[0]?.status === 'fulfilled');
      assert.deepEqual(stored, won[0].value);
    });

    test('delete() removes, returns false when missing, honours expectedRevision', async () => {
      assert.equal(await store.delete('Node', 'del-missing'), false);
      const r = await store.put('Node', 'del-1', { v: 1 });
      assert.equal(await store.delete('Node', 'del-1'), true);
      assert.equal(await store.get('Node', 'del-1'), undefined);
      assert.equal(await store.delete('Node', 'del-1'), false);

      const r2 = await store.put('Node', 'del-2', { v: 1 });
      await assert.rejects(store.delete('Node', 'del-2', { expectedRevision: r.revision }), isStoreError('TENDRIL_ERR_STORE_CONFLICT'));
      assert.ok(await store.get('Node', 'del-2'));
      assert.equal(await store.delete('Node', 'del-2', { expectedRevision: r2.revision }), true);
      assert.equal(await store.delete('Node', 'del-2', { expectedRevision: r2.revision }), false);
    });

    test('list() returns every resource of the kind and only that kind, with a revision', async () => {
      await store.put('Node', 'ls-a', { v: 'a' });
      await store.put('Node', 'ls-b', { v: 'b' });
      await store.put('IPAMState', 'ls-c', { v: 'c' });
      const { items, revision } = await store.list<{ v: string }>('Node');
      const mine = items.filter((i) => i.name.startsWith('ls-'));
      assert.deepEqual(mine.map((i) => [i.kind, i.name, i.value.v]).sort(), [['Node', 'ls-a', 'a'], ['Node', 'ls-b', 'b']]);
      assert.ok(items.every((i) => i.kind === 'Node' && i.revision <= revision));
    });

    test('invalid kinds and names are refused before reaching the server', async () => {
      await assert.rejects(store.get('Pod' as Kind, 'x'), isStoreError('TENDRIL_ERR_STORE_INVALID'));
      await assert.rejects(store.put('Node', 'a/b', {}), isStoreError('TENDRIL_ERR_STORE_INVALID'));
      await assert.rejects(store.put('Node', '', {}), isStoreError('TENDRIL_ERR_STORE_INVALID'));
      await assert.rejects(store.put('Node', 'ok', undefined), isStoreError('TENDRIL_ERR_STORE_INVALID'));
      assert.throws(() => store.watch('Pod' as Kind, { fromRevision: 0, onEvent: () => {} }), isStoreError('TENDRIL_ERR_STORE_INVALID'));
    });

    test('watch() from a list revision sees later puts and deletes in order, nothing earlier', async () => {
      await store.put('Node', 'w1-early', { v: 0 });
      const { revision } = await store.list('Node');
      const w = collect(store, 'Node', revision, 'w1-');
      const p1 = await store.put('Node', 'w1-a', { v: 1 });
      await store.put('IPAMState', 'w1-other-kind', { v: 1 });
      const p2 = await store.put('Node', 'w1-a', { v: 2 });
      assert.equal(await store.delete('Node', 'w1-a'), true);
      const p3 = await store.put('Node', 'w1-b', { v: 3 });
      await w.waitCount(4);
      // A marker put after everything: once it arrives, any event delivered twice would have arrived before it.
      const end = await store.put('Node', 'w1-z', {});
      await w.waitCount(5);
      w.handle.close();
      assert.equal(w.events.length, 5, w.summary().join(', '));
      assert.deepEqual(w.events[4], { type: 'put', resource: end });
      const [e1, e2, e3, e4] = w.events;
      assert.deepEqual(e1, { type: 'put', resource: p1 });
      assert.deepEqual(e2, { type: 'put', resource: p2 });
      assert.equal(e3?.type, 'delete');
      assert.ok(e3?.type === 'delete' && e3.kind === 'Node' && e3.name === 'w1-a' && e3.revision > p2.revision && e3.revision < p3.revision);
      assert.deepEqual(e4, { type: 'put', resource: p3 });
    });

    test('two watchers on one kind both see every event', async () => {
      const { revision } = await store.list('Node');
      const a = collect(store, 'Node', revision, 'w2-');
      const other = open();
      const b = collect(other, 'Node', revision, 'w2-');
      for (let i = 0; i < 5; i++) await store.put('Node', `w2-${i}`, { i });
      await a.waitCount(5);
      await b.waitCount(5);
      a.handle.close();
      b.handle.close();
      assert.deepEqual(a.summary(), b.summary());
    });

    test('watch() from an old revision replays history, then continues live', async () => {
      const { revision } = await store.list('Node');
      await store.put('Node', 'w3-a', { v: 1 });
      await store.delete('Node', 'w3-a');
      const w = collect(store, 'Node', revision, 'w3-');
      await w.waitCount(2);
      await store.put('Node', 'w3-b', { v: 2 });
      await w.waitCount(3);
      w.handle.close();
      assert.deepEqual(w.events.map((e) => e.type), ['put', 'delete', 'put']);
    });

    test('watch handle close() stops delivery', async () => {
      const { revision } = await store.list('Node');
      const w = collect(store, 'Node', revision, 'w4-');
      await store.put('Node', 'w4-a', {});
      await w.waitCount(1);
      w.handle.close();
      const after1 = collect(store, 'Node', revision, 'w4-');
      await store.put('Node', 'w4-b', {});
      // Another watch of the same client has the event: the closed one would have had it by now too.
      await after1.waitCount(2);
      after1.handle.close();
      assert.equal(w.events.length, 1);
    });

    test('a restart (SIGKILL) while a watch is open: client reconnects, nothing lost or duplicated', async () => {
      const { revision } = await store.list('Node');
      const w = collect(store, 'Node', revision, 'rs-');
      const before1 = await store.put('Node', 'rs-before', { v: 1 });
      await w.waitCount(1);
      await until('watch connected', () => w.connection.includes(true));

      await backend.kill();
      const impatient = openStore(backend.url, { connectTimeoutMs: 200 });
      clients.push(impatient);
      await assert.rejects(impatient.get('Node', 'rs-before'), isStoreError('TENDRIL_ERR_STORE_UNAVAILABLE'));
      assert.equal((await impatient.ping()).ok, false);
      // Another client writes during the outage: its put waits for the server to come back.
      const writer = open();
      const during = writer.put('Node', 'rs-during', { v: 2 });
      await until('watch to notice the outage', () => w.connection.includes(false));
      await sleep(300);
      await backend.start();
      const d = await during;
      assert.ok(d.revision > before1.revision);
      const after1 = await writer.put('Node', 'rs-after', { v: 3 });
      await w.waitCount(3);
      const end = await writer.put('Node', 'rs-z', {});
      await w.waitCount(4);
      w.handle.close();
      assert.deepEqual(w.summary(), [
        `put rs-before@${before1.revision}`,
        `put rs-during@${d.revision}`,
        `put rs-after@${after1.revision}`,
        `put rs-z@${end.revision}`,
      ]);
      assert.deepEqual(w.connection.slice(0, 3), [true, false, true]);
      // The old client carries on by itself too.
      assert.deepEqual((await store.get('Node', 'rs-during'))?.value, { v: 2 });
    });

    test('a frozen server (SIGSTOP) is noticed, and after SIGCONT the watch resumes without loss', async () => {
      const { revision } = await store.list('Node');
      const w = collect(store, 'Node', revision, 'fz-');
      const a = await store.put('Node', 'fz-a', {});
      await w.waitCount(1);
      await until('watch connected', () => w.connection.includes(true));
      backend.pause();
      try {
        await until('watch to give up on the frozen server', () => w.connection.includes(false));
      } finally {
        backend.resume();
      }
      const b = await store.put('Node', 'fz-b', {});
      await w.waitCount(2);
      await until('watch reconnected', () => w.connection.filter((c) => c).length >= 2);
      const c = await store.put('Node', 'fz-c', {});
      await w.waitCount(3);
      const end = await store.put('Node', 'fz-z', {});
      await w.waitCount(4);
      w.handle.close();
      assert.deepEqual(w.summary(), [`put fz-a@${a.revision}`, `put fz-b@${b.revision}`, `put fz-c@${c.revision}`, `put fz-z@${end.revision}`]);
    });

    test('a restart keeps resources, and revisions keep increasing', async () => {
      const r = await store.put('IPAMState', 'persist-1', { assigned: { n1: '10.0.1.0/24' } });
      await store.delete('Node', 'pg-1');
      const { revision } = await store.list('Node');
      await backend.kill();
      await backend.start();
      const g = await store.get('IPAMState', 'persist-1');
      assert.deepEqual(g, r);
      assert.equal(await store.get('Node', 'pg-1'), undefined);
      assert.ok((await store.list('Node')).revision >= revision);
      const next = await store.put('Node', 'persist-2', {});
      assert.ok(next.revision > revision, `${next.revision} > ${revision}`);
    });

    test('watch() from a revision whose history is gone calls onResync and closes', async () => {
      const { revision } = await store.list('Node');
      await store.put('Node', 'gone-a', {});
      await backend.forgetHistory(store, revision + 1);
      const w = collect(store, 'Node', revision, 'gone-');
      await until('onResync', () => w.resync !== undefined);
      assert.match(w.resync ?? '', /history|compact/);
      const live = collect(store, 'Node', (await store.list('Node')).revision, 'gone-');
      await store.put('Node', 'gone-b', {});
      // A live watch of the same client has the event: the closed one would have had it by now too.
      await live.waitCount(1);
      live.handle.close();
      assert.equal(w.events.length, 0);
      // The caller's recovery: list again and watch from the new revision.
      const again = await store.list('Node');
      assert.ok(again.items.some((i) => i.name === 'gone-a'));
      const w2 = collect(store, 'Node', again.revision, 'gone-');
      await store.put('Node', 'gone-c', {});
      await w2.waitCount(1);
      w2.handle.close();
      assert.deepEqual(w2.summary().map((s) => s.split('@')[0]), ['put gone-c']);
    });
  });
}

contract((tmp) => localBackend(tmp, 'unix'));
contract((tmp) => localBackend(tmp, 'tcp'));
contract((tmp) => etcdBackend(tmp));
