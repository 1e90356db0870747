// Integration (issue #4): the upstream NetworkPolicy e2e reachability model on a 3-node lab, in tunnel and in native
// routing: namespaces x, y, z with pods a, b, c each, every policy case probed as a full 9x9 x {80,81} x {tcp,udp}
// matrix against an expectation written from Kubernetes/Cilium semantics. Root; each lab is the test's own and is
// removed in after(), also on failure.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ApiClient } from '../src/util/api-client.js';
import { labDown, labUp, loadLab, podAdd, type LabPod, type RoutingMode } from '../src/lab/lab.js';
import { labNamespaceSet, labPodLabel, labPolicyApply, labPolicyDelete } from '../src/lab/security.js';
import { REPO_ROOT, netnsPath } from '../src/lab/paths.js';
import type { ProbeResult, ProbeTarget } from '../src/lab/probe.js';

const PROBE_JS = path.join(REPO_ROOT, 'dist/src/lab/probe.js');
const PROBE_TIMEOUT_MS = 800;
/** One generous deadline for every condition the suite waits on: cells to agree, a change to be enforced. A loaded
 *  2-core machine makes things slow, never different; the time things took is reported, not asserted. */
const DEADLINE_MS = 30_000;
/** Cells listed one per line under the grids of a failed matrix. */
const MAX_DIFF_LINES = 40;

const NAMESPACES = ['x', 'y', 'z'] as const;
const POD_NAMES = ['a', 'b', 'c'] as const;
/** a on the control node, b and c on the workers: x/a -> y/a is same-node, x/a -> x/b is cross-node. */
const NODE_OF: Record<string, string> = { a: 'ctr', b: 'w1', c: 'w2' };
const PORTS = [80, 81] as const;
const PROTOS = ['tcp', 'udp'] as const;
type Proto = (typeof PROTOS)[number];

const NAMED_PORTS = PORTS.flatMap((port) => [
  { name: `serve-${port}-tcp`, port, protocol: 'TCP' as const },
  { name: `serve-${port}-udp`, port, protocol: 'UDP' as const },
]);

// ---- the model: what Kubernetes says, independent of Tendril's compiler ----

/** A pod as the expectation sees it: its namespace, its labels and its namespace's labels. */
interface MPod {
  ns: string;
  name: string;
  /** "x/a" */
  key: string;
  labels: Record<string, string>;
  nsLabels: Record<string, string>;
}

type Allowed = (from: MPod, to: MPod, port: number, proto: Proto) => boolean;

/** The model's label state, changed in step with labPodLabel / labNamespaceSet. */
class World {
  readonly podLabels = new Map<string, Record<string, string>>();
  readonly nsLabels = new Map<string, Record<string, string>>();
  constructor() {
    for (const ns of NAMESPACES) {
      this.nsLabels.set(ns, { ns, 'kubernetes.io/metadata.name': ns });
      for (const p of POD_NAMES) this.podLabels.set(`${ns}/${p}`, { pod: p });
    }
  }
  pods(): MPod[] {
    return NAMESPACES.flatMap((ns) =>
      POD_NAMES.map((name) => ({ ns, name, key: `${ns}/${name}`, labels: { ...this.podLabels.get(`${ns}/${name}`)! }, nsLabels: { ...this.nsLabels.get(ns)! } })),
    );
  }
}

/** matchLabels semantics: every pair must be present (an empty selector matches everything). */
const has = (labels: Record<string, string>, sel: Record<string, string>): boolean => Object.entries(sel).every(([k, v]) => labels[k] === v);

type CellKey = string;
const cellKey = (from: string, to: string, port: number, proto: Proto): CellKey => `${from}>${to}:${port}/${proto}`;

/**
 * The expected matrix. A pod always reaches itself (upstream's AllowLoopback: the traffic never leaves the pod's
 * namespace through lo, so no CNI sees it); the 9 self cells are probed too.
 */
function expectMatrix(world: World, allowed: Allowed): Map<CellKey, boolean> {
  const out = new Map<CellKey, boolean>();
  const pods = world.pods();
  for (const f of pods) for (const t of pods) for (const port of PORTS) for (const proto of PROTOS) {
    out.set(cellKey(f.key, t.key, port, proto), f.key === t.key || allowed(f, t, port, proto));
  }
  return out;
}

// ---- probing ----

interface Probed {
  ok: boolean;
  error?: string;
}

/** Runs the prober inside @pod's netns; resolves with its results (or rejects with its stderr). */
function runProber(pod: LabPod, targets: ProbeTarget[], timeoutMs = PROBE_TIMEOUT_MS): Promise<ProbeResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${netnsPath(pod.netns)}`, '--', process.execPath, PROBE_JS, '--timeout', String(timeoutMs), JSON.stringify(targets)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), timeoutMs + 15_000);
    child.on('exit', (code) => {
      clearTimeout(killer);
      if (code !== 0) return reject(new Error(`prober in ${pod.namespace}/${pod.name} exited with ${String(code)}: ${err.trim()}`));
      try {
        resolve(JSON.parse(out) as ProbeResult[]);
      } catch {
        reject(new Error(`prober in ${pod.namespace}/${pod.name} printed no JSON: ${out}${err}`));
      }
    });
  });
}

class Cluster {
  readonly world = new World();
  constructor(readonly lab: string) {}

  pod(key: string): LabPod {
    const [ns, name] = key.split('/') as [string, string];
    const p = loadLab(this.lab).pods.find((x) => x.namespace === ns && x.name === name);
    assert.ok(p, `pod ${key} in lab ${this.lab}`);
    return p;
  }

  agent(node: string): ApiClient {
    const n = loadLab(this.lab).nodes.find((x) => x.name === node);
    assert.ok(n, `node ${node}`);
    return new ApiClient(n.socket);
  }

  /** Probes the given cells, one prober per source pod, all probers in parallel. */
  async probeCells(cells: Array<{ from: string; to: string; port: number; proto: Proto }>): Promise<Map<CellKey, Probed>> {
    const st = loadLab(this.lab);
    const ipOf = new Map(st.pods.map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    const keyOf = new Map(st.pods.map((p) => [p.ip, `${p.namespace}/${p.name}`]));
    const bySource = new Map<string, ProbeTarget[]>();
    for (const c of cells) {
      const list = bySource.get(c.from) ?? [];
      list.push({ ip: ipOf.get(c.to)!, port: c.port, proto: c.proto });
      bySource.set(c.from, list);
    }
    const out = new Map<CellKey, Probed>();
    await Promise.all(
      [...bySource].map(async ([from, targets]) => {
        for (const r of await runProber(this.pod(from), targets)) {
          out.set(cellKey(from, keyOf.get(r.ip)!, r.port, r.proto), { ok: r.ok, ...(r.error !== undefined ? { error: r.error } : {}) });
        }
      }),
    );
    return out;
  }

  async probeOne(from: string, to: string, port = 80, proto: Proto = 'tcp'): Promise<Probed> {
    return (await this.probeCells([{ from, to, port, proto }])).get(cellKey(from, to, port, proto))!;
  }

  /**
   * Probes the full matrix until it agrees with @allowed: cells that differ are probed again (a probe that lost its
   * answer on a loaded machine, a node still applying a change) until they agree or DEADLINE_MS passes, which fails
   * with a readable diff of the first and the last round. Returns the ms the first full round took.
   */
  async checkMatrix(label: string, allowed: Allowed): Promise<number> {
    const want = expectMatrix(this.world, allowed);
    const cells = [...want.keys()].map(parseCell);
    const t0 = Date.now();
    const got = await this.probeCells(cells);
    const ms = Date.now() - t0;
    let wrong = [...want].filter(([k, v]) => !agrees(v, got.get(k))).map(([k]) => k);
    let again = new Map<CellKey, Probed>();
    while (wrong.length > 0 && Date.now() - t0 < DEADLINE_MS) {
      await new Promise((r) => setTimeout(r, 300));
      again = await this.probeCells(wrong.map(parseCell));
      wrong = wrong.filter((k) => !agrees(want.get(k)!, again.get(k)));
    }
    if (wrong.length > 0) {
      const first = [...want].filter(([k, v]) => !agrees(v, got.get(k))).length;
      assert.fail(`${label}: ${wrong.length} of ${want.size} cells still differ from the expectation after ${DEADLINE_MS} ms (${first} in the first round)\n${renderDiff(want, got, again)}`);
    }
    timings.push({ label: `${this.lab} ${label}`, ms });
    return ms;
  }

  /** Probes one cell until it is @ok; returns the ms from @t0 until it was. */
  async probeUntil(from: string, to: string, port: number, proto: Proto, ok: boolean, t0: number): Promise<number> {
    for (;;) {
      const p = await this.probeOne(from, to, port, proto);
      if (p.ok === ok && (ok || p.error === 'timeout')) return Date.now() - t0;
      if (Date.now() - t0 > DEADLINE_MS) assert.fail(`${from} -> ${to}:${port}/${proto} still ${p.ok ? 'allowed' : `denied (${p.error ?? '?'})`} after ${DEADLINE_MS} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

const timings: Array<{ label: string; ms: number }> = [];

/** Allowed = an answer came back; denied = the probe timed out (policy drops: a refusal or reset is not a denial). */
function agrees(allowed: boolean, p: Probed | undefined): boolean {
  return p !== undefined && (allowed ? p.ok : !p.ok && p.error === 'timeout');
}

function parseCell(k: CellKey): { from: string; to: string; port: number; proto: Proto } {
  const m = /^(.+)>(.+):(\d+)\/(tcp|udp)$/.exec(k)!;
  return { from: m[1]!, to: m[2]!, port: Number(m[3]), proto: m[4] as Proto };
}

/**
 * One grid per port/protocol that has a difference (rows: from, columns: to; "." allowed as expected, "x" denied as
 * expected, "A" allowed but expected denied, "D" denied but expected allowed, "R" refused or reset where a drop was
 * expected), then one line per differing cell.
 */
function renderDiff(want: Map<CellKey, boolean>, got: Map<CellKey, Probed>, again: Map<CellKey, Probed>): string {
  const keys = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => `${ns}/${p}`));
  const lines: string[] = [];
  for (const port of PORTS) {
    for (const proto of PROTOS) {
      const bad = keys.some((f) => keys.some((t) => !agrees(want.get(cellKey(f, t, port, proto))!, got.get(cellKey(f, t, port, proto)))));
      if (!bad) continue;
      lines.push(`  ${port}/${proto}   ${keys.map((k) => k.padEnd(4)).join('')}`);
      for (const f of keys) {
        const row = keys.map((t) => {
          const w = want.get(cellKey(f, t, port, proto))!;
          const g = got.get(cellKey(f, t, port, proto));
          return (agrees(w, g) ? (w ? '.' : 'x') : g?.ok ? 'A' : w ? 'D' : 'R').padEnd(4);
        });
        lines.push(`  ${f.padEnd(9)}${row.join('')}`);
      }
    }
  }
  const how = (p: Probed | undefined): string => (p === undefined ? 'not probed' : p.ok ? 'allowed' : `denied (${p.error ?? '?'})`);
  const cells = [...want].filter(([k, w]) => !agrees(w, got.get(k)));
  for (const [k, w] of cells.slice(0, MAX_DIFF_LINES)) {
    lines.push(`  ${k}: expected ${w ? 'allowed' : 'denied'}, got ${how(got.get(k))}; again ${how(again.get(k))}`);
  }
  if (cells.length > MAX_DIFF_LINES) lines.push(`  ... and ${cells.length - MAX_DIFF_LINES} more`);
  return lines.join('\n');
}

// ---- policies ----

let tmpDir = '';

/** Applies YAML documents (through a file, as `lab policy apply` does); returns the resource names to delete. */
async function apply(lab: string, name: string, yaml: string): Promise<string[]> {
  const file = path.join(tmpDir, `${lab}-${name}.yaml`);
  fs.writeFileSync(file, yaml);
  return (await labPolicyApply(lab, [file])).map((a) => a.resource);
}

async function remove(lab: string, resources: string[]): Promise<void> {
  for (const r of resources) await labPolicyDelete(lab, r);
}

interface MatrixCase {
  name: string;
  yaml: string;
  allowed: Allowed;
}

const np = (name: string, ns: string, spec: string): string =>
  `apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${spec.replace(/^/gm, '  ')}\n---\n`;
const tnp = (name: string, ns: string, spec: string): string =>
  `apiVersion: tendril.io/v2\nkind: TendrilNetworkPolicy\nmetadata:\n  name: ${name}\n  namespace: ${ns}\nspec:\n${spec.replace(/^/gm, '  ')}\n---\n`;

const CASES: MatrixCase[] = [
  {
    name: 'deny-all ingress in x',
    yaml: np('deny-ingress', 'x', 'podSelector: {}\npolicyTypes: [Ingress]'),
    allowed: (_f, t) => t.ns !== 'x',
  },
  {
    name: 'x/a ingress only from pod=b in any namespace (namespaceSelector {} and podSelector in one peer)',
    yaml: np('a-from-any-b', 'x', `podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {}
        podSelector: {matchLabels: {pod: b}}`),
    allowed: (f, t) => t.key !== 'x/a' || f.labels['pod'] === 'b',
  },
  {
    name: 'x/a ingress from an OR of two peers: pod=b of x, or any pod of the namespace named y',
    yaml: np('a-from-b-or-y', 'x', `podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - podSelector: {matchLabels: {pod: b}}
      - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: y}}`),
    allowed: (f, t) => t.key !== 'x/a' || (f.ns === 'x' && has(f.labels, { pod: 'b' })) || has(f.nsLabels, { 'kubernetes.io/metadata.name': 'y' }),
  },
  {
    name: 'ingress to x only from namespaces labelled ns=y',
    yaml: np('x-from-ns-y', 'x', `podSelector: {}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}`),
    allowed: (f, t) => t.ns !== 'x' || has(f.nsLabels, { ns: 'y' }),
  },
  {
    name: 'deny-all egress from y (replies into y still pass)',
    yaml: np('deny-egress', 'y', 'podSelector: {}\npolicyTypes: [Egress]'),
    allowed: (f) => f.ns !== 'y',
  },
  {
    name: 'named ports: ingress to x only on serve-81-tcp; egress of z/c only to serve-80-udp',
    yaml:
      np('x-named-81-tcp', 'x', `podSelector: {}
ingress:
  - ports:
      - {port: serve-81-tcp, protocol: TCP}`) +
      np('zc-named-80-udp', 'z', `podSelector: {matchLabels: {pod: c}}
policyTypes: [Egress]
egress:
  - ports:
      - {port: serve-80-udp, protocol: UDP}`),
    allowed: (f, t, port, proto) => (t.ns !== 'x' || (port === 81 && proto === 'tcp')) && (f.key !== 'z/c' || (port === 80 && proto === 'udp')),
  },
  {
    name: 'port ranges: x ingress UDP 80-81 only; y ingress TCP 81-90 only',
    yaml:
      np('x-udp-80-81', 'x', `podSelector: {}
ingress:
  - ports:
      - {protocol: UDP, port: 80, endPort: 81}`) +
      np('y-tcp-81-90', 'y', `podSelector: {}
ingress:
  - ports:
      - {protocol: TCP, port: 81, endPort: 90}`),
    allowed: (_f, t, port, proto) => (t.ns !== 'x' || proto === 'udp') && (t.ns !== 'y' || (proto === 'tcp' && port >= 81 && port <= 90)),
  },
  {
    name: 'TendrilNetworkPolicy ingressDeny (namespace y, 80/TCP) beats a NetworkPolicy allowing everything into x/a',
    yaml:
      np('a-allow-all', 'x', `podSelector: {matchLabels: {pod: a}}
ingress:
  - {}`) +
      tnp('a-deny-y-80', 'x', `endpointSelector: {matchLabels: {pod: a}}
ingressDeny:
  - fromEndpoints:
      - matchLabels: {"k8s:io.kubernetes.pod.namespace": y}
    toPorts:
      - ports:
          - {port: "80", protocol: TCP}`),
    allowed: (f, t, port, proto) => t.key !== 'x/a' || !(f.ns === 'y' && port === 80 && proto === 'tcp'),
  },
  {
    name: 'TendrilNetworkPolicy entities: x/a from cluster on 80/TCP, x/b from cluster, x/c from world only',
    yaml:
      tnp('a-cluster-80', 'x', `endpointSelector: {matchLabels: {pod: a}}
ingress:
  - fromEntities: [cluster]
    toPorts:
      - ports:
          - {port: "80", protocol: TCP}`) +
      tnp('b-cluster', 'x', `endpointSelector: {matchLabels: {pod: b}}
ingress:
  - fromEntities: [cluster]`) +
      tnp('c-world', 'x', `endpointSelector: {matchLabels: {pod: c}}
ingress:
  - fromEntities: [world]`),
    allowed: (_f, t, port, proto) => (t.key === 'x/a' ? port === 80 && proto === 'tcp' : t.key !== 'x/c'),
  },
  {
    // Each pair: only a -> b:80 is allowed (egress of a, ingress of b); a allows no ingress and b no egress, so the
    // replies pass by conntrack alone. x/a -> x/b crosses nodes (ctr -> w1), y/a -> z/a stays on ctr.
    name: 'both directions enforced on two pairs, only a -> b:80 allowed: replies pass by conntrack, b -> a does not',
    yaml:
      np('xa-out', 'x', `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
egress:
  - to:
      - podSelector: {matchLabels: {pod: b}}
    ports:
      - {port: 80, protocol: TCP}
      - {port: 80, protocol: UDP}`) +
      np('xb-in', 'x', `podSelector: {matchLabels: {pod: b}}
policyTypes: [Ingress, Egress]
ingress:
  - from:
      - podSelector: {matchLabels: {pod: a}}
    ports:
      - {port: 80, protocol: TCP}
      - {port: 80, protocol: UDP}`) +
      np('ya-out', 'y', `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
egress:
  - to:
      - namespaceSelector: {matchLabels: {ns: z}}
        podSelector: {matchLabels: {pod: a}}
    ports:
      - {port: 80}`) +
      np('za-in', 'z', `podSelector: {matchLabels: {pod: a}}
policyTypes: [Ingress, Egress]
ingress:
  - from:
      - namespaceSelector: {matchLabels: {ns: y}}
        podSelector: {matchLabels: {pod: a}}
    ports:
      - {port: 80}`),
    allowed: (f, t, port, proto) => {
      const pairs: Array<[string, string, Proto[]]> = [['x/a', 'x/b', ['tcp', 'udp']], ['y/a', 'z/a', ['tcp']]];
      for (const [a, b, protos] of pairs) {
        if (f.key === a || t.key === b || f.key === b || t.key === a) {
          return f.key === a && t.key === b && port === 80 && protos.includes(proto);
        }
      }
      return true;
    },
  },
];

// ---- the suite, once per routing mode ----

function suite(routing: RoutingMode): void {
  const LAB = `pl${process.pid % 10000}${routing[0]}`;
  const c = new Cluster(LAB);
  const ALL: Allowed = () => true;
  const holds: ChildProcess[] = [];

  describe(`policy reachability matrix, ${routing} routing`, { timeout: 240_000 }, () => {
    before(async () => {
      const t0 = Date.now();
      await labDown(LAB);
      await labUp({ name: LAB, nodes: 3, routing });
      for (const ns of NAMESPACES) await labNamespaceSet(LAB, ns, { ns }, 'add');
      // One pod at a time: podAdd rewrites the lab state file.
      for (const ns of NAMESPACES) {
        for (const p of POD_NAMES) await podAdd(LAB, p, { node: NODE_OF[p]!, namespace: ns, labels: { pod: p }, serve: [...PORTS], ports: NAMED_PORTS });
      }
      timings.push({ label: `${LAB} lab up + 9 pods`, ms: Date.now() - t0 });
    });
    after(async () => {
      for (const h of holds) h.kill('SIGKILL');
      await labDown(LAB);
    });

    test('no policy: every pod reaches every pod on 80 and 81, TCP and UDP', async () => {
      await c.checkMatrix('no policy', ALL);
    });

    for (const k of CASES) {
      test(k.name, async () => {
        const res = await apply(LAB, k.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 40), k.yaml);
        try {
          await c.checkMatrix(k.name, k.allowed);
        } finally {
          await remove(LAB, res);
        }
        await c.checkMatrix(`${k.name} (deleted)`, ALL);
      });
    }

    test('a denied probe shows up as "Policy denied" drops on the destination node', async () => {
      type Metric = { reason: number; description: string; direction: string; packets: number };
      const denied = async (): Promise<number> =>
        (await c.agent('ctr').get<Metric[]>('/v1/map/metrics')).filter((m) => m.description === 'Policy denied' && m.direction === 'ingress').reduce((s, m) => s + m.packets, 0);
      const res = await apply(LAB, 'metrics', np('deny-a', 'x', 'podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]'));
      try {
        const before = await denied();
        await c.probeUntil('y/b', 'x/a', 80, 'tcp', false, Date.now());
        const after = await denied();
        assert.ok(after > before, `"Policy denied" ingress packets on ctr: ${before} before the probe, ${after} after`);
      } finally {
        await remove(LAB, res);
      }
    });

    test('NetworkPolicy ipBlock selects pods by address (e2e model): x/a egress to y/b by /32, updated in place to its /24 minus y/b, then plus y/b; ingress from a remote pod by /32', async () => {
      const ip = (key: string): string => c.pod(key).ip;
      const net24 = (key: string): string => `${ip(key).split('.').slice(0, 3).join('.')}.0/24`;
      const inNet = (t: MPod, key: string): boolean => net24(t.key) === net24(key);
      const egress = (peers: string): string =>
        np('xa-egress-cidr', 'x', `podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Egress]\negress:\n  - to:\n${peers}`);
      let res: string[] = [];
      try {
        res = await apply(LAB, 'ipblock-1', egress(`      - ipBlock: {cidr: ${ip('y/b')}/32}`));
        await c.checkMatrix('ipBlock: x/a egress to y/b/32', (f, t) => f.key !== 'x/a' || t.key === 'y/b');
        res = await apply(LAB, 'ipblock-2', egress(`      - ipBlock: {cidr: ${net24('y/b')}, except: [${ip('y/b')}/32]}`));
        await c.checkMatrix("ipBlock updated: y/b's /24 minus y/b", (f, t) => f.key !== 'x/a' || (inNet(t, 'y/b') && t.key !== 'y/b'));
        res = await apply(LAB, 'ipblock-3', egress(`      - ipBlock: {cidr: ${net24('y/b')}, except: [${ip('y/b')}/32]}\n      - ipBlock: {cidr: ${ip('y/b')}/32}`));
        await c.checkMatrix("ipBlock updated: y/b's /24 minus y/b, plus y/b/32", (f, t) => f.key !== 'x/a' || inNet(t, 'y/b'));
      } finally {
        await remove(LAB, res);
      }
      const ing = await apply(LAB, 'ipblock-in', np('xa-from-zc', 'x', `podSelector: {matchLabels: {pod: a}}\ningress:\n  - from:\n      - ipBlock: {cidr: ${ip('z/c')}/32}`));
      try {
        await c.checkMatrix('ipBlock: x/a ingress from z/c/32 (another node)', (f, t) => t.key !== 'x/a' || f.key === 'z/c');
      } finally {
        await remove(LAB, ing);
      }
      await c.checkMatrix('ipBlock cases deleted', ALL);
    });

    test('a pod relabel lets a denied pod in, and the old label out again (time to enforcement reported)', async () => {
      const allowed: Allowed = (f, t) => t.key !== 'x/a' || has(f.labels, { role: 'friend' });
      const res = await apply(LAB, 'friends', np('a-from-friends', 'x', `podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {}
        podSelector: {matchLabels: {role: friend}}`));
      try {
        await c.checkMatrix('friends only, no friend yet', allowed);
        const t0 = Date.now();
        await labPodLabel(LAB, 'z/b', { role: 'friend' });
        c.world.podLabels.get('z/b')!['role'] = 'friend';
        timings.push({ label: `${LAB} relabel returned`, ms: Date.now() - t0 });
        timings.push({ label: `${LAB} relabel enforced (probe ok at)`, ms: await c.probeUntil('z/b', 'x/a', 80, 'tcp', true, t0) });
        await c.checkMatrix('friends only, z/b relabelled', allowed);
        await labPodLabel(LAB, 'z/b', { role: null });
        delete c.world.podLabels.get('z/b')!['role'];
        await c.probeUntil('z/b', 'x/a', 80, 'tcp', false, Date.now());
      } finally {
        await remove(LAB, res);
      }
    });

    test('a namespace label change lets a namespaceSelector admit its pods (time to enforcement reported)', async () => {
      const allowed: Allowed = (f, t) => t.key !== 'x/a' || has(f.nsLabels, { team: 'blue' });
      const res = await apply(LAB, 'team-blue', np('a-from-blue', 'x', `podSelector: {matchLabels: {pod: a}}
ingress:
  - from:
      - namespaceSelector: {matchLabels: {team: blue}}`));
      try {
        await c.checkMatrix('team blue only, no blue namespace', allowed);
        const t0 = Date.now();
        await labNamespaceSet(LAB, 'y', { team: 'blue' }, 'label');
        c.world.nsLabels.get('y')!['team'] = 'blue';
        timings.push({ label: `${LAB} namespace label returned`, ms: Date.now() - t0 });
        timings.push({ label: `${LAB} namespace label enforced (probe ok at)`, ms: await c.probeUntil('y/c', 'x/a', 81, 'udp', true, t0) });
        await c.checkMatrix('team blue only, y labelled', allowed);
        await labNamespaceSet(LAB, 'y', { team: null }, 'label');
        delete c.world.nsLabels.get('y')!['team'];
        await c.probeUntil('y/c', 'x/a', 81, 'udp', false, Date.now());
      } finally {
        await remove(LAB, res);
      }
    });

    test('a policy applied later cuts an established connection; deleting it lets new connections through', async () => {
      const from = c.pod('y/b');
      const to = c.pod('x/a');
      const lines: Array<{ t: number; text: string }> = [];
      const child = spawn('nsenter', [`--net=${netnsPath(from.netns)}`, '--', process.execPath, PROBE_JS, '--hold', `${to.ip}:80`, '--interval', '100', '--timeout', '400'], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      holds.push(child);
      let partial = '';
      child.stdout!.on('data', (d: Buffer) => {
        partial += d.toString();
        const parts = partial.split('\n');
        partial = parts.pop()!;
        for (const text of parts) lines.push({ t: Date.now(), text });
      });
      let err = '';
      child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
      const waitFor = async (what: string, pred: () => boolean, ms: number): Promise<void> => {
        const end = Date.now() + ms;
        while (!pred()) {
          if (Date.now() > end) assert.fail(`${what} within ${ms} ms; hold printed: ${lines.map((l) => l.text).join(', ')} ${err}`);
          await new Promise((r) => setTimeout(r, 20));
        }
      };
      let res: string[] = [];
      try {
        await waitFor('5 answers on the held connection', () => lines.filter((l) => l.text.startsWith('ok ')).length >= 5, DEADLINE_MS);
        const t0 = Date.now();
        res = await apply(LAB, 'cut', np('deny-a-later', 'x', 'podSelector: {matchLabels: {pod: a}}\npolicyTypes: [Ingress]'));
        const applied = Date.now();
        // Cut: once requests time out, they keep timing out (3 in a row after apply returned, none answered in between).
        const tail = (): Array<{ t: number; text: string }> => lines.filter((l) => l.t > applied);
        await waitFor('3 requests in a row time out once the policy is in', () => tail().slice(-3).length === 3 && tail().slice(-3).every((l) => l.text.startsWith('timeout ')), DEADLINE_MS);
        const lastOk = lines.filter((l) => l.text.startsWith('ok ')).at(-1)!;
        assert.ok(!lines.some((l) => l.text.startsWith('closed') || l.text.startsWith('error')), 'the connection is cut by drops, not reset');
        timings.push({ label: `${LAB} established flow: last answer after apply returned (apply took ${applied - t0} ms)`, ms: lastOk.t - applied });
        await remove(LAB, res);
        res = [];
        const fresh = await c.probeOne('y/b', 'x/a', 80, 'tcp');
        assert.ok(fresh.ok, `a new connection after the delete: ${fresh.error ?? ''}`);
      } finally {
        child.kill('SIGTERM');
        if (res.length) await remove(LAB, res);
      }
    });

    test('after all cases: everything reachable again', async () => {
      await c.checkMatrix('final, no policy', ALL);
    });
  });
}

before(() => {
  tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tendril-policy-lab-'));
});
after(() => {
  fs.rmSync(tmpDir, { recursive: true, force: true });
  const total = timings.reduce((s, t) => s + t.ms, 0);
  process.stdout.write(`# timings (ms):\n${timings.map((t) => `#   ${String(t.ms).padStart(6)}  ${t.label}`).join('\n')}\n#   total of the above ${total}\n`);
});

suite('tunnel');
suite('native');
