// The etcd backend on a three-member cluster started here (Debian's etcd, loopback ports, a data dir per member):
// killing or freezing the member a client talks to while resources are written and watched moves requests and
// watches to another member; every write lands exactly once, every watch sees the store's history exactly once.
// The store part needs no root; every member is killed in after(), also on failure. The lab part (root) runs agents
// and the operator on `lab up --store etcd --etcd-members 3` and kills the member they talk to under pod and policy churn.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { EtcdStore, StoreError, openStore, type Kind, type Store, type WatchEvent } from '../src/store/index.js';
import { ApiClient } from '../src/util/api-client.js';
import { execCapture, labDown, labExists, labUp, loadLab, podAdd, restartStore, type LabPod } from '../src/lab/lab.js';
import { labPolicyApply } from '../src/lab/security.js';
import { labPaths } from '../src/lab/paths.js';
import { sleep } from './lib/proc.js';
import { until } from './lib/proc.js';
import { freePort } from './lib/wait.js';

const CLIENT_OPTS = { connectTimeoutMs: 20_000, requestTimeoutMs: 2000, maxBackoffMs: 300, livenessMs: 1000 };
const KINDS: Kind[] = ['Endpoint', 'Policy'];

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
};

interface Member {
  name: string;
  clientPort: number;
  peerUrl: string;
  dataDir: string;
  log: string;
  child?: ChildProcess;
}

async function memberStatus(port: number): Promise<{ header?: { member_id?: string }; leader?: string }> {
  const res = await fetch(`http://127.0.0.1:${port}/v3/maintenance/status`, { method: 'POST', body: '{}' });
  return (await res.json()) as { header?: { member_id?: string }; leader?: string };
}

/** Three etcd members of one new cluster on loopback; start/kill/freeze each. */
class EtcdCluster {
  readonly members: Member[] = [];
  constructor(private readonly tmp: string) {}

  async init(size: number): Promise<void> {
    for (let i = 0; i < size; i++) {
      const name = `m${i}`;
      this.members.push({
        name,
        clientPort: await freePort(),
        peerUrl: `http://127.0.0.1:${await freePort()}`,
        dataDir: path.join(this.tmp, name),
        log: path.join(this.tmp, `${name}.log`),
      });
    }
    await Promise.all(this.members.map((m) => this.start(m)));
  }

  /** `etcd+http://…` with every member, `first` listed first. */
  url(first = 0): string {
    const order = [...this.members.slice(first), ...this.members.slice(0, first)];
    return 'etcd+' + order.map((m) => `http://127.0.0.1:${m.clientPort}`).join(',');
  }

  byPort(port: number): Member {
    const m = this.members.find((x) => x.clientPort === port);
    assert.ok(m, `no member on port ${port}`);
    return m;
  }

  /** The member a client uses, from its description ("…; using 127.0.0.1:PORT)"). */
  inUse(store: Store): Member {
    const m = /using 127\.0\.0\.1:(\d+)\)$/.exec(store.description);
    assert.ok(m, store.description);
    return this.byPort(Number(m[1]));
  }

  async start(m: Member): Promise<void> {
    if (m.child && m.child.exitCode === null && m.child.signalCode === null) return;
    const client = `http://127.0.0.1:${m.clientPort}`;
    const args = [
      '--name', m.name, '--data-dir', m.dataDir,
      '--listen-client-urls', client, '--advertise-client-urls', client,
      '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', this.members.map((x) => `${x.name}=${x.peerUrl}`).join(','),
      '--initial-cluster-state', 'new', '--initial-cluster-token', `tdlt-${process.pid}`,
    ];
    const log = fs.openSync(m.log, 'a');
    const c = spawn('etcd', args, { stdio: ['ignore', log, log] });
    fs.closeSync(log);
    m.child = c;
    let exited = false;
    c.once('exit', () => (exited = true));
    c.once('error', () => (exited = true));
    // A member answers the status call with the leader required only once the cluster has elected one.
    const probe = new EtcdStore({ host: '127.0.0.1', port: m.clientPort }, { connectTimeoutMs: 0, requestTimeoutMs: 1000 });
    try {
      await until(`etcd member ${m.name} to have a leader`, async () => {
        if (exited) throw new Error(`etcd ${m.name} exited: ${fs.readFileSync(m.log, 'utf8').slice(-2000)}`);
        return (await probe.ping()).ok;
      });
    } finally {
      await probe.close();
    }
  }

  /** Whether `m` is the raft leader now (etcd's maintenance status, asked of `m` itself). */
  async isLeader(m: Member): Promise<boolean> {
    const st = await memberStatus(m.clientPort);
    return st.leader !== undefined && st.leader === st.header?.member_id;
  }

  /** Makes `m` the raft leader (or not: then another member), through etcd's MoveLeader, asked of the leader. */
  async lead(m: Member, yes: boolean): Promise<void> {
    await until(`${m.name} ${yes ? 'to lead' : 'not to lead'}`, async () => {
      if ((await this.isLeader(m)) === yes) return true;
      const live = this.members.filter((x) => x.child && x.child.exitCode === null && x.child.signalCode === null);
      const statuses = await Promise.all(live.map(async (x) => ({ x, st: await memberStatus(x.clientPort) })));
      const leader = statuses.find((s) => s.st.leader === s.st.header?.member_id);
      const target = yes ? statuses.find((s) => s.x === m) : statuses.find((s) => s.x !== m && s !== leader);
      if (!leader || !target) return false;
      await fetch(`http://127.0.0.1:${leader.x.clientPort}/v3/maintenance/transfer-leadership`, { method: 'POST', body: JSON.stringify({ targetID: target.st.header?.member_id }) });
      return false;
    });
  }

  async kill(m: Member): Promise<void> {
    const c = m.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGCONT');
    c.kill('SIGKILL');
    await exited;
  }

  freeze(m: Member): void {
    m.child?.kill('SIGSTOP');
  }

  thaw(m: Member): void {
    m.child?.kill('SIGCONT');
  }

  /** Every member running (a failed test may leave one down). */
  async allUp(): Promise<void> {
    await Promise.all(this.members.map((m) => this.start(m)));
  }

  async stop(): Promise<void> {
    await Promise.all(this.members.map((m) => this.kill(m)));
  }
}

/** What a watch delivered, as comparable strings, and when. */
function recorder(store: Store, kind: Kind, fromRevision: number) {
  const seen: string[] = [];
  const times: number[] = [];
  const connection: boolean[] = [];
  let resync: string | undefined;
  let last = fromRevision;
  const handle = store.watch(kind, {
    fromRevision,
    onEvent: (ev: WatchEvent<unknown>) => {
      seen.push(eventText(ev));
      times.push(Date.now());
      last = ev.type === 'put' ? ev.resource.revision : ev.revision;
    },
    onResync: (r) => (resync = r),
    onConnection: (c) => connection.push(c),
  });
  return {
    seen, times, connection, handle,
    get resync() {
      return resync;
    },
    get last() {
      return last;
    },
  };
}

function eventText(ev: WatchEvent<unknown>): string {
  return ev.type === 'put'
    ? `put ${ev.resource.kind}/${ev.resource.name}@${ev.resource.revision}=${JSON.stringify(ev.resource.value)}`
    : `delete ${ev.kind}/${ev.name}@${ev.revision}`;
}

/** The store's own history of `kind` after `fromRevision` up to the marker at `toRevision`, replayed by a fresh watch. */
async function history(url: string, kind: Kind, fromRevision: number, toRevision: number): Promise<string[]> {
  const s = openStore(url, CLIENT_OPTS);
  try {
    const r = recorder(s, kind, fromRevision);
    await until(`history of ${kind} up to ${toRevision}`, () => r.last >= toRevision);
    r.handle.close();
    return r.seen;
  } finally {
    await s.close();
  }
}

/** Waits for every promise (none left to reject unobserved), then fails with the first failure. */
async function settleAll<T>(ps: Promise<T>[]): Promise<T[]> {
  const rs = await Promise.allSettled(ps);
  for (const r of rs) if (r.status === 'rejected') throw r.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
}

/** Writes a last resource of each watched kind: a watch that delivered it delivered everything before it. */
async function markers(store: Store, tag: string): Promise<Map<Kind, number>> {
  const m = new Map<Kind, number>();
  for (const k of KINDS) m.set(k, (await store.put(k, `zz-marker-${tag}`, { marker: tag, kind: k })).revision);
  return m;
}

/**
 * A stream of writes as an agent and an operator make them: endpoints created, updated and deleted, policies
 * applied and replaced. Each value is unique, so a write applied twice shows in the history.
 */
async function churn(store: Store, who: string, count: number, pauseMs: number, latencies: { at: number; ms: number }[]): Promise<{ applied: string[] }> {
  const applied: string[] = [];
  for (let i = 0; i < count; i++) {
    const t0 = Date.now();
    const slot = i % 7;
    if (i % 5 === 4) {
      const name = `${who}-pol-${i % 3}`;
      const r = await store.put('Policy', name, { document: { who, seq: i } });
      applied.push(`put Policy/${name}@${r.revision}`);
    } else if (i % 11 === 10) {
      const name = `${who}-ep-${slot}`;
      const cur = await store.get('Endpoint', name);
      if (cur) {
        // Conditional, as identity and endpoint bookkeeping does.
        await store.delete('Endpoint', name, { expectedRevision: cur.revision });
        applied.push(`delete Endpoint/${name}`);
      }
    } else if (i % 3 === 0) {
      const name = `${who}-ep-new-${i}`;
      const r = await store.put('Endpoint', name, { who, seq: i }, { expectedRevision: 0 });
      applied.push(`put Endpoint/${name}@${r.revision}`);
    } else {
      const name = `${who}-ep-${slot}`;
      const r = await store.put('Endpoint', name, { who, seq: i });
      applied.push(`put Endpoint/${name}@${r.revision}`);
    }
    latencies.push({ at: t0, ms: Date.now() - t0 });
    if (pauseMs > 0) await sleep(pauseMs);
  }
  return { applied };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-etcd3-`));
const cluster = new EtcdCluster(tmp);
const clients: Store[] = [];
const open = (first: number): Store => {
  const s = openStore(cluster.url(first), CLIENT_OPTS);
  clients.push(s);
  return s;
};
// Members are ours alone: if the runner dies before after(), they go with it.
process.on('exit', () => {
  for (const m of cluster.members) m.child?.kill('SIGKILL');
});

describe('etcd store on a three-member cluster', { timeout: 240_000 }, () => {
  before(async () => {
    await cluster.init(3);
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    await cluster.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  test('a client given every member uses the first; all members serve the same data', async () => {
    const a = open(0);
    const b = open(2);
    assert.equal(cluster.inUse(a), cluster.members[0]);
    assert.equal(cluster.inUse(b), cluster.members[2]);
    const r = await a.put('Node', 'same', { v: 1 });
    assert.deepEqual(await b.get('Node', 'same'), r);
  });

  test('killing the member in use while resources change: requests fail over, watches resume, nothing lost or repeated', async () => {
    await cluster.allUp();
    // The "agent": watches endpoints and policies and writes its own, all through one client on member 0.
    const agent = open(0);
    const operator = open(1);
    const victim = cluster.inUse(agent);
    const start = (await agent.list('Endpoint')).revision;
    const watches = KINDS.map((k) => recorder(agent, k, start));
    await until('watches connected', () => watches.every((w) => w.connection.includes(true)));

    const latencies: { at: number; ms: number }[] = [];
    const opLat: { at: number; ms: number }[] = [];
    const agentWrites = churn(agent, 'agent', 120, 10, latencies);
    const operatorWrites = churn(operator, 'op', 120, 10, opLat);
    await until('some writes before the kill', () => latencies.length >= 40);
    // A follower first (the leader's death is the second case below).
    await cluster.lead(victim, false);
    const wasLeader = await cluster.isLeader(victim);
    const killedAt = Date.now();
    await cluster.kill(victim);
    const [a, o] = (await settleAll([agentWrites, operatorWrites])) as [{ applied: string[] }, { applied: string[] }];
    assert.notEqual(cluster.inUse(agent), victim, 'the agent\'s client moved to another member');

    const end = await markers(operator, 'kill');
    const survivor = cluster.members.indexOf(cluster.inUse(operator));
    const truth = new Map<Kind, string[]>();
    for (const [i, kind] of KINDS.entries()) {
      const w = watches[i]!;
      await until(`${kind} watch to reach its marker`, () => w.last >= end.get(kind)!);
      assert.equal(w.resync, undefined, `no resync of ${kind}`);
      assert.deepEqual(w.connection.slice(0, 3), [true, false, true], `${kind} watch reconnected`);
      truth.set(kind, await history(cluster.url(survivor), kind, start, end.get(kind)!));
      assert.deepEqual(w.seen, truth.get(kind), `${kind}: the watch saw exactly the store's history`);
    }
    // Each write the writers made is in the history once: values are unique, so a doubled write would show twice.
    const all = [...truth.values()].flat();
    const values = all.filter((e) => e.startsWith('put ')).map((e) => e.slice(e.indexOf('=') + 1));
    const twice = values.filter((v, i) => values.indexOf(v) !== i);
    assert.deepEqual(twice, [], 'no write applied twice');
    for (const w of [...a.applied, ...o.applied]) {
      if (w.startsWith('put ')) assert.ok(all.some((e) => e.startsWith(w + '=')), `${w} is in the history`);
    }

    // Figures: request latency around the kill, and how long the watch went without events after it.
    const before = latencies.filter((l) => l.at < killedAt - 200).map((l) => l.ms);
    const around = latencies.filter((l) => l.at >= killedAt - 200 && l.at < killedAt + 5000).map((l) => l.ms);
    const ep = watches[0]!;
    const firstAfter = ep.times.find((t) => t > killedAt);
    const lastBefore = [...ep.times].reverse().find((t) => t <= killedAt);
    process.stdout.write(
      `# kill of ${victim.name} (${wasLeader ? 'the leader' : 'a follower'}): agent write p50 ${median(before)} ms before, max ${Math.max(...around)} ms across the kill; ` +
        `operator max ${Math.max(...opLat.map((l) => l.ms))} ms; Endpoint watch gap ${firstAfter !== undefined && lastBefore !== undefined ? firstAfter - lastBefore : NaN} ms ` +
        `(first event ${firstAfter !== undefined ? firstAfter - killedAt : NaN} ms after the kill); ${ep.seen.length} events\n`,
    );
    for (const w of watches) w.handle.close();

    // The member comes back with its data and rejoins; a later failure of another member is ridden out the same way.
    await cluster.start(victim);
    const again = cluster.inUse(agent);
    await cluster.lead(again, true);
    const againLeader = await cluster.isLeader(again);
    await cluster.kill(again);
    const t1 = Date.now();
    const r = await agent.put('Endpoint', 'after-second-kill', { v: 1 });
    process.stdout.write(`# kill of ${again.name} (${againLeader ? 'the leader' : 'a follower'}): next write took ${Date.now() - t1} ms\n`);
    assert.deepEqual(await operator.get('Endpoint', 'after-second-kill'), r);
    await cluster.start(again);
  });

  test('a frozen member (SIGSTOP) is left by requests and watches; nothing lost', async () => {
    await cluster.allUp();
    const client = open(0);
    const writer = open(1);
    const victim = cluster.inUse(client);
    const start = (await client.list('Endpoint')).revision;
    const w = recorder(client, 'Endpoint', start);
    await until('watch connected', () => w.connection.includes(true));
    const lat: { at: number; ms: number }[] = [];
    cluster.freeze(victim);
    try {
      const t0 = Date.now();
      const g = await client.get('Endpoint', 'nothing');
      const readFailover = Date.now() - t0;
      assert.equal(g, undefined);
      assert.notEqual(cluster.inUse(client), victim);
      const ops = await churn(client, 'frz', 30, 5, lat);
      await churn(writer, 'frzw', 30, 5, []);
      const end = (await markers(writer, 'freeze')).get('Endpoint')!;
      await until('watch moved off the frozen member', () => w.connection.includes(false));
      await until('watch caught up', () => w.last >= end);
      const truth = await history(cluster.url(cluster.members.indexOf(cluster.inUse(writer))), 'Endpoint', start, end);
      assert.deepEqual(w.seen, truth);
      assert.equal(w.resync, undefined);
      assert.ok(ops.applied.length > 0);
      process.stdout.write(`# freeze of ${victim.name}: first read failed over after ${readFailover} ms (request timeout ${CLIENT_OPTS.requestTimeoutMs} ms); writes after it p50 ${median(lat.map((l) => l.ms))} ms\n`);
    } finally {
      cluster.thaw(victim);
      w.handle.close();
    }
  });

  test('without quorum writes fail with TENDRIL_ERR_STORE_UNAVAILABLE and go through again once a member returns', async () => {
    await cluster.allUp();
    const impatient = openStore(cluster.url(0), { ...CLIENT_OPTS, connectTimeoutMs: 1500 });
    clients.push(impatient);
    const patient = open(0);
    await impatient.put('Node', 'quorum', { v: 1 });
    const [m1, m2] = [cluster.members[1]!, cluster.members[2]!];
    await cluster.kill(m1);
    await cluster.kill(m2);
    try {
      const t0 = Date.now();
      await assert.rejects(impatient.put('Node', 'quorum', { v: 2 }), (err: unknown) => {
        assert.ok(err instanceof StoreError, String(err));
        assert.equal(err.code, 'TENDRIL_ERR_STORE_UNAVAILABLE');
        return true;
      });
      process.stdout.write(`# no quorum: write refused after ${Date.now() - t0} ms\n`);
      const pending = patient.put('Node', 'quorum', { v: 3 });
      pending.catch(() => {}); // observed below
      await sleep(500);
      await cluster.start(m1);
      const r = await pending;
      assert.deepEqual((await patient.get('Node', 'quorum'))?.value, { v: 3 });
      assert.equal((await patient.get('Node', 'quorum'))?.revision, r.revision);
    } finally {
      await cluster.start(m1).catch(() => {});
      await cluster.start(m2).catch(() => {});
    }
  });
});

// ---- the same in a lab: agents and the operator on a three-member etcd cluster (root; the lab is removed in after()) ----

const LAB = `e${process.pid % 100000}`;

interface IpcacheRow { prefix: string; identity: number }

describe('agents on a three-member etcd cluster (lab up --store etcd --etcd-members 3)', { timeout: 300_000 }, () => {
  const agent = (node: string) => new ApiClient(loadLab(LAB).nodes.find((n) => n.name === node)!.socket);
  /** Index of the etcd member a node's agent uses, from its configuration view ("…; using IP:PORT)"). */
  const memberInUse = async (node: string): Promise<number> => {
    const cfg = await agent(node).get<{ store: string }>('/v1/config');
    const m = /using [\d.]+:(\d+)\)$/.exec(cfg.store);
    assert.ok(m, cfg.store);
    return (Number(m[1]) - 2379) / 10_000;
  };
  const knowsPods = async (node: string, pods: LabPod[]): Promise<boolean> => {
    const rows = await agent(node).get<IpcacheRow[]>('/v1/map/tendril_ipcache');
    return pods.every((p) => rows.some((r) => r.prefix === `${p.ip}/32`));
  };
  /** etcd's v3 gateway of lab member `i`, asked from the underlay namespace where the members run. */
  const etcdCall = (i: number, api: string, body: unknown): { header?: { member_id?: string }; leader?: string } => {
    const out = execCapture(labPaths(LAB).underlayNetns, ['curl', '-s', '--max-time', '2', '-X', 'POST', '-d', JSON.stringify(body), `http://192.168.10.1:${2379 + 10_000 * i}${api}`]);
    return JSON.parse(out.stdout || '{}') as { header?: { member_id?: string }; leader?: string };
  };
  /** Moves raft leadership to member `i` (the worst case for its clients when it dies). */
  const makeLeader = async (i: number): Promise<void> => {
    await until(`lab etcd member ${i} to lead`, () => {
      const sts = [0, 1, 2].map((k) => etcdCall(k, '/v3/maintenance/status', {}));
      const target = sts[i]?.header?.member_id;
      const leader = sts.findIndex((st) => st.leader !== undefined && st.leader === st.header?.member_id);
      if (leader === i) return true;
      if (leader >= 0 && target) etcdCall(leader, '/v3/maintenance/transfer-leadership', { targetID: target });
      return false;
    });
  };
  const policyDir = fs.mkdtempSync(path.join(os.tmpdir(), `tdlt-${process.pid}-etcd3-pol-`));
  const policy = (i: number): string => {
    const file = path.join(policyDir, `pol-${i}.yaml`);
    fs.writeFileSync(file, `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: pol-${i}\n  namespace: default\n` +
      `spec:\n  podSelector: {matchLabels: {role: guarded-${i}}}\n  policyTypes: [Ingress]\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {app: a${i % 3}}}\n`);
    return file;
  };

  before(async () => {
    await labDown(LAB);
    const st = await labUp({ name: LAB, nodes: 2, store: 'etcd', etcdMembers: 3 });
    assert.equal(st.etcdPids?.length, 3);
    assert.match(st.storeUrl, /^etcd\+http:\/\/192\.168\.10\.1:2379,http:\/\/192\.168\.10\.1:12379,http:\/\/192\.168\.10\.1:22379$/);
  });
  after(async () => {
    const pids = labExists(LAB) ? (loadLab(LAB).etcdPids ?? []) : [];
    await labDown(LAB);
    // The members are the lab's: none may survive it.
    for (const pid of pids) {
      try {
        process.kill(pid, 0);
        process.kill(pid, 'SIGKILL');
        assert.fail(`etcd member pid ${pid} survived lab down`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
      }
    }
    fs.rmSync(policyDir, { recursive: true, force: true });
  });

  test('--etcd-members is checked before anything is made', async () => {
    for (const [o, why] of [
      [{ store: 'local' as const, etcdMembers: 3 }, /--etcd-members 3 needs --store etcd/],
      [{ store: 'etcd' as const, etcdMembers: 0 }, /Invalid --etcd-members 0: expected 1-7/],
      [{ store: 'etcd' as const, etcdMembers: 2.5 }, /Invalid --etcd-members 2.5: expected 1-7/],
    ] as const) {
      await assert.rejects(labUp({ name: `${LAB}x`, ...o }), (err: unknown) => {
        assert.equal((err as { code?: string }).code, 'TENDRIL_ERR_LAB_INVALID');
        assert.match((err as Error).message, why);
        return true;
      });
    }
    assert.equal(labExists(`${LAB}x`), false);
  });

  test('killing the member the agents use while pods and policies change: every agent ends with every pod and policy', async (t) => {
    const nodes = ['ctr', 'w1'];
    const victim = await memberInUse('ctr');
    assert.equal(victim, 0, 'agents use the first member listed');
    assert.equal(await memberInUse('w1'), 0);
    await makeLeader(victim);
    const pods: LabPod[] = [];
    const applied: string[] = [];
    let killedAt = 0;
    // While the cluster elects a new leader, a write can meet "store unavailable" (CNI 11, HTTP 503: try again
    // later); a runtime and kubectl retry those, and so does this test. Nothing may be lost or doubled either way.
    let retries = 0;
    const asRuntime = async <T>(f: () => Promise<T>): Promise<T> => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        try {
          return await f();
        } catch (err) {
          const m = (err as Error).message;
          if (Date.now() > deadline || !/code 11:|TENDRIL_ERR_STORE_UNAVAILABLE|store is unavailable/.test(m)) throw err;
          retries++;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    };
    const podsDone = (async () => {
      for (let i = 0; i < 8; i++) {
        pods.push(await asRuntime(() => podAdd(LAB, `p${i}`, { node: nodes[i % 2]!, labels: { app: `a${i % 3}`, seq: `s${i}` } })));
        if (i === 2) {
          // Mid-churn: the member both agents (and the operator) talk to dies.
          killedAt = Date.now();
          process.kill(loadLab(LAB).etcdPids![victim]!, 'SIGKILL');
        }
      }
    })();
    const policiesDone = (async () => {
      for (let i = 0; i < 5; i++) applied.push(...(await asRuntime(() => labPolicyApply(LAB, [policy(i)]))).map((a) => a.key));
    })();
    await settleAll([podsDone, policiesDone]);
    const churnMs = Date.now() - killedAt;
    t.diagnostic(`writes retried after "try again later" during the election: ${retries}`);

    for (const node of nodes) {
      assert.notEqual(await memberInUse(node), victim, `${node}'s agent moved to another member`);
      // Every pod of both nodes is in the node's ipcache; every policy is in force.
      await until(`${node} to know every pod`, () => knowsPods(node, pods));
      const pol = await agent(node).get<{ policies: Array<{ key: string; source: string }> }>('/v1/policy');
      const cluster = pol.policies.filter((p) => p.source === 'cluster').map((p) => p.key);
      assert.deepEqual(cluster.sort(), [...applied].sort(), `${node}'s policies`);
      const eps = await agent(node).get<Array<{ status: { networking: { addressing: Array<{ ipv4: string }> } } }>>('/v1/endpoint');
      const ips = eps.map((e) => e.status.networking.addressing[0]?.ipv4);
      // (Besides the pods, the agent's own health endpoint.)
      const mine = pods.filter((p) => p.node === node).map((p) => p.ip);
      assert.deepEqual(mine.filter((ip) => ips.filter((x) => x === ip).length !== 1), [], `${node}'s endpoints, none lost or doubled`);
      assert.equal(ips.length, mine.length + 1, `${node}: ${ips.join(', ')}`);
    }
    // Identities: one per label set, whichever node made it.
    const ids = await agent('ctr').get<Array<{ id: number; labels: string[] }>>('/v1/identity');
    const sets = ids.map((i) => [...i.labels].sort().join(','));
    assert.equal(new Set(sets).size, sets.length, 'no label set has two identities');
    // Pods made after the kill reach each other across nodes.
    const [a, b] = [pods[6]!, pods[7]!];
    assert.equal(execCapture(a.netns, ['ping', '-c', '1', '-W', '2', b.ip]).status, 0, `${a.name} -> ${b.name}`);
    process.stdout.write(`# lab: member ${victim} (the leader) killed after 3 of 8 pods; the remaining 5 pods and the policies took ${churnMs} ms in all\n`);

    // The member returns with its data and catches up; the lab's store restart still restarts every member.
    await restartStore(LAB, 0, victim);
    const back = await podAdd(LAB, 'after-return', { node: 'w1' });
    await until('ctr to know the pod added after the member returned', () => knowsPods('ctr', [back]));
  });
});
