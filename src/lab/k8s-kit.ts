// The Kubernetes kit (../shared/k8s, named by TENDRIL_K8S_KIT) for integration tests: a control plane per test file
// in a run directory of its own, on ports picked from the pid, stopped with down.sh --purge afterwards.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { connect, Rest } from '../k8s/index.js';

const run = promisify(execFile);

/** The kit's directory, or a loud error: a test that needs the kit fails rather than skips. */
export function kitDir(): string {
  const kit = process.env['TENDRIL_K8S_KIT'];
  if (!kit) throw new Error('TENDRIL_K8S_KIT is not set: it names the Kubernetes kit (../shared/k8s); .ci/run sets it');
  if (!fs.existsSync(`${kit}/up.sh`)) throw new Error(`TENDRIL_K8S_KIT=${kit} has no up.sh: not the Kubernetes kit`);
  return kit;
}

export interface Kit {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;
  readonly runDir: string;
  readonly kubeconfig: string;
  readonly apiserverPort: number;
  /** Runs one of the kit's scripts with this run's settings; stdout trimmed. */
  script(name: string, args?: string[], extraEnv?: NodeJS.ProcessEnv): Promise<string>;
  /** down.sh --purge: stops everything of the run and deletes its directory. */
  down(): Promise<void>;
}

/**
 * Starts the control plane. Ports: BASE+0…5 with BASE from the pid in 26000-27199 (clear of the kit's defaults and
 * of the ports the other tests use), so that test files running at once do not clash.
 */
export async function startKit(opts: { apiserverOnly?: boolean; env?: NodeJS.ProcessEnv; portBase?: number } = {}): Promise<Kit> {
  const dir = kitDir();
  // Short: the kit's unix sockets live under it.
  const runDir = fs.mkdtempSync('/tmp/tk8s-');
  const base = opts.portBase ?? 26000 + (process.pid % 200) * 6;
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env, K8S_RUN: runDir, K8S_PORT_BASE: String(base) };
  if (opts.apiserverOnly) env['K8S_APISERVER_ONLY'] = '1';
  let unlockNode: (() => Promise<void>) | undefined;
  const script = async (name: string, args: string[] = [], extraEnv: NodeJS.ProcessEnv = {}): Promise<string> => {
    if (name === 'node.sh' && !unlockNode) unlockNode = await lockKitNode();
    try {
      const { stdout } = await run('bash', [`${dir}/${name}`, ...args], { env: { ...env, ...extraEnv }, maxBuffer: 16 << 20 });
      return stdout.trim();
    } catch (err) {
      const e = err as { stderr?: string; message: string };
      throw new Error(`${name} ${args.join(' ')} failed: ${e.message}\n${(e.stderr ?? '').split('\n').slice(-30).join('\n')}`);
    }
  };
  const down = async (): Promise<void> => {
    try {
      await script('down.sh', ['--purge']);
    } finally {
      const unlock = unlockNode;
      unlockNode = undefined;
      await unlock?.();
    }
  };
  try {
    const kubeconfig = await script('up.sh');
    return { dir, env, runDir, kubeconfig, apiserverPort: base, script, down };
  } catch (err) {
    await down().catch(() => {});
    throw err;
  }
}

/**
 * The kit's node.sh hard-codes one host path, /var/lib/kubelet (the mount point kubelet-ns.sh binds each run's
 * node/var-lib-kubelet onto; node.sh makes it when absent and down.sh removes it again), and takes no variable for
 * it: a run's down.sh removes it under another run's kubelet. So runs with a node are serialized: node.sh is
 * entered holding an flock(1) on NODE_LOCK, released after down.sh. The lock is held by a child `flock … cat`
 * reading our stdin pipe: when this process dies the pipe closes and the kernel drops the lock (no stale lock).
 */
export const NODE_LOCK = '/tmp/tendril-k8s-kit-node.lock';

/** Waits (bounded) for the node lock; the returned function releases it. */
export async function lockKitNode(timeoutMs = 1_800_000): Promise<() => Promise<void>> {
  const child: ChildProcess = spawn('flock', ['-x', '-w', String(Math.ceil(timeoutMs / 1000)), NODE_LOCK, 'sh', '-c', 'echo locked; exec cat >/dev/null'], {
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('error', (e) => reject(new Error(`flock ${NODE_LOCK}: ${e.message}`)));
    child.once('exit', (code) => reject(new Error(`flock ${NODE_LOCK} gave up (exit ${code}) after ${timeoutMs} ms: another kit run with a node holds it ${stderr.trim()}`)));
  });
  return async () => {
    if (child.exitCode !== null) return;
    const gone = new Promise((r) => child.once('exit', r));
    child.stdin!.end();
    await gone;
  };
}

/** What a test writes: apiVersion, kind, metadata.name (+ namespace), the rest as the apiserver takes it. */
export type RawObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> } } & Record<string, unknown>;

const CLUSTER_SCOPED = new Set(['Namespace', 'Node', 'TendrilClusterwideNetworkPolicy', 'TendrilNode', 'TendrilIdentity', 'TendrilEndpoint', 'TendrilIPAMState', 'TendrilPodIPPool']);

/**
 * Writes objects as raw JSON, as kubectl does. client-node's KubernetesObjectApi serializes through its typed
 * models, which name NetworkPolicy's `from` `_from` and silently drop a plain `from`: a policy written with it
 * reaches the apiserver without its peers (allowing every source on the port).
 */
export function rawObjects(kubeconfig: string): {
  create(o: RawObject): Promise<Record<string, unknown>>;
  delete(o: Pick<RawObject, 'apiVersion' | 'kind' | 'metadata'>): Promise<void>;
  mergePatch(o: RawObject): Promise<void>;
  read(o: Pick<RawObject, 'apiVersion' | 'kind' | 'metadata'>): Promise<Record<string, unknown>>;
} {
  const conn = connect(kubeconfig);
  const rest = new Rest(conn.kc, conn.server);
  const path = (o: Pick<RawObject, 'apiVersion' | 'kind' | 'metadata'>, withName: boolean): string => {
    const base = o.apiVersion.includes('/') ? `/apis/${o.apiVersion}` : `/api/${o.apiVersion}`;
    const lower = o.kind.toLowerCase();
    const plural = lower.endsWith('y') ? `${lower.slice(0, -1)}ies` : `${lower}s`;
    const ns = CLUSTER_SCOPED.has(o.kind) ? '' : `/namespaces/${o.metadata.namespace ?? 'default'}`;
    return `${base}${ns}/${plural}${withName ? `/${o.metadata.name}` : ''}`;
  };
  return {
    create: (o) => rest.request('POST', path(o, false), o),
    delete: async (o) => {
      await rest.request('DELETE', path(o, true));
    },
    mergePatch: async (o) => {
      await rest.request('PATCH', path(o, true), o, 'application/merge-patch+json');
    },
    read: (o) => rest.request('GET', path(o, true)),
  };
}

/**
 * SIGKILLs the kit's kube-apiserver and waits until its listening socket is gone, so that up.sh, which refuses a
 * port in use, can start the next one (a killed process may hold its port for a moment after the signal).
 */
export async function killApiserver(kit: Kit, timeoutMs = 60_000): Promise<void> {
  const pid = Number(fs.readFileSync(`${kit.runDir}/pids/kube-apiserver.pid`, 'utf8'));
  process.kill(pid, 'SIGKILL');
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { stdout } = await run('ss', ['-Hltnp']);
    if (!stdout.includes(`pid=${pid},`)) return;
    if (Date.now() > deadline) throw new Error(`the killed kube-apiserver (pid ${pid}) still listens after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Brings a killed control plane back with up.sh, tried again under one deadline: right after a SIGKILL, up.sh may
 * still find the old process's port or pid in its way.
 */
export async function upAgain(kit: Kit, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await kit.script('up.sh');
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 1000));
    }
  }
}
