// NodeManager against a real local store (unprivileged: a unix socket in a temp dir), through a wrapper that counts
// open watches and can hold a listing back, so stop() during start() is observable.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { LocalStoreServer, openStore, type Kind, type NodeSpec, type Store, type WatchHandle, type WatchOptions } from '../store/index.js';
import { NodeManager, type NodeEvents } from './nodes.js';

const silent = pino({ level: 'silent' });
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `tdl-${process.pid}-nodes-`));
const server = new LocalStoreServer({ dataDir: path.join(dir, 'data'), keepaliveMs: 200 });
await server.listen({ socket: path.join(dir, 'store.sock') });
const inner = openStore(server.url);
after(async () => {
  await inner.close();
  await server.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The store, with a count of watches not closed yet and a gate every list() waits on. */
function counted(): { store: Store; open: () => number; listing: () => number; hold: () => () => void } {
  let open = 0;
  let listing = 0;
  let gate: Promise<void> = Promise.resolve();
  const store: Store = {
    description: inner.description,
    get: (kind, name) => inner.get(kind, name),
    list: async <T>(kind: Kind) => {
      listing++;
      await gate;
      return inner.list<T>(kind);
    },
    put: (kind, name, value, opts) => inner.put(kind, name, value, opts),
    delete: (kind, name, opts) => inner.delete(kind, name, opts),
    watch: (kind: Kind, opts: WatchOptions): WatchHandle => {
      const h = inner.watch(kind, opts);
      open++;
      let closed = false;
      return {
        close: () => {
          if (!closed) open--;
          closed = true;
          h.close();
        },
      };
    },
    ping: () => inner.ping(),
    close: async () => {},
  };
  return {
    store,
    open: () => open,
    listing: () => listing,
    hold: () => {
      let release!: () => void;
      gate = new Promise((r) => (release = r));
      return release;
    },
  };
}

/** Every event as a line, for exact comparisons. */
function recorder(): { events: NodeEvents; seen: string[] } {
  const seen: string[] = [];
  return {
    seen,
    events: {
      self: (n) => seen.push(`self ${n.name} ${n.podCIDRs.join(',')}`),
      upsert: (n) => seen.push(`upsert ${n.name}`),
      remove: (name) => seen.push(`remove ${name}`),
      resync: (all) => seen.push(`resync ${all.map((n) => n.name).join(',')}`),
    },
  };
}

async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const node = (name: string, podCIDRs: string[] = []): NodeSpec => ({ name, addresses: ['10.0.0.1'], podCIDRs });

test('NodeManager registers itself, reports its CIDR and remote nodes coming and going, and registers again when deleted', async () => {
  const { store, open } = counted();
  await inner.put('Node', 'peer1', node('peer1', ['172.20.1.0/24']));
  const nm = new NodeManager(store, { name: 'me', addresses: ['10.0.0.9'] }, silent);
  const { events, seen } = recorder();
  await nm.start(events);
  assert.deepEqual(seen, ['self me ', 'resync peer1']);
  assert.deepEqual((await inner.get<NodeSpec>('Node', 'me'))?.value, { name: 'me', addresses: ['10.0.0.9'], podCIDRs: [] });

  await nm.update((cur) => ({ ...cur!, podCIDRs: ['172.20.0.0/24'] }));
  await inner.put('Node', 'peer2', node('peer2'));
  await inner.delete('Node', 'peer1');
  await until(() => seen.length === 5, 'three changes');
  assert.deepEqual(seen.slice(2), ['self me 172.20.0.0/24', 'upsert peer2', 'remove peer1']);
  assert.deepEqual(nm.list().map((n) => n.name), ['me', 'peer2']);

  await inner.delete('Node', 'me');
  await until(() => seen.length === 6, 'the node to register again');
  assert.deepEqual(seen.at(-1), 'self me ');
  nm.stop();
  assert.equal(open(), 0, 'stop() closes the watch');
  await inner.delete('Node', 'peer2');
  await inner.delete('Node', 'me');
});

test('NodeManager.stop() during start() leaves no watch open and reports nothing afterwards', async () => {
  const { store, open, listing, hold } = counted();
  const nm = new NodeManager(store, { name: 'early', addresses: [] }, silent);
  const { events, seen } = recorder();
  const release = hold();
  const started = nm.start(events);
  // Registered, and the listing is on its way: the moment the old fork opened its watch after stop().
  await until(() => listing() === 1, 'start() to be listing');
  nm.stop();
  release();
  await started;
  assert.equal(open(), 0, 'no watch opened after stop()');
  assert.deepEqual(seen, [], 'no resync after stop()');
  await inner.delete('Node', 'early');
});
