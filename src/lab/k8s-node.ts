// Tendril installed on the kit's kubelet node from install/kubernetes/ (the DaemonSet and the Deployment, run by
// the kubelet from the image scripts/build-image.sh makes), and running commands in pods through the apiserver
// (exec, as kubectl exec does: the kit has no kubectl and npm has no real kubectl binary, so
// @kubernetes/client-node's Exec over the apiserver → kubelet → containerd stream).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, Exec, KubeConfig, KubernetesObjectApi, type KubernetesObject, type V1Status } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';

export const INSTALL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../install/kubernetes');
const FILES = ['serviceaccounts.yaml', 'agent-rbac.yaml', 'operator-rbac.yaml', 'configmap.yaml', 'agent-daemonset.yaml', 'operator-deployment.yaml'];

type Obj = KubernetesObject & Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** The objects of install/kubernetes/, in apply order. */
export function installObjects(): Obj[] {
  return FILES.flatMap((f) => parseAllDocuments(fs.readFileSync(path.join(INSTALL_DIR, f), 'utf8')).map((d) => d.toJS() as Obj));
}

export interface KitNodePaths {
  /** Replaces each host path of the DaemonSet (the container sees it at the same path, as the CNI plugin on the host does). */
  hostPaths: Record<string, string>;
  /** Extra host dirs the agent must see at the same path (the runtime's pod netns dir: CNI_NETNS). */
  extraMounts: string[];
  /** Volumes mounted without propagation (a host path that is no shared mount: runc refuses Bidirectional there). */
  noPropagation?: string[];
  /** ConfigMap keys to override. */
  config: Record<string, string>;
}

/** The install, adapted to one kit node: run-unique host paths (instead of /var/run/tendril, …) and settings. */
export function kitOverlay(objs: Obj[], o: KitNodePaths): Obj[] {
  return objs.map((obj) => {
    const x = structuredClone(obj);
    if (x.kind === 'ConfigMap') x['data'] = { ...x['data'], ...o.config };
    if (x.kind === 'DaemonSet') {
      const spec = x['spec'].template.spec;
      const byVolume = new Map<string, string>();
      for (const v of spec.volumes) {
        const to = o.hostPaths[v.hostPath?.path];
        if (to) {
          byVolume.set(v.name, to);
          v.hostPath.path = to;
        }
      }
      for (const c of [...spec.initContainers, ...spec.containers]) {
        for (const m of c.volumeMounts) {
          // the agent's own paths are seen where the host sees them; the install-cni target stays under /host
          if (o.noPropagation?.includes(m.name)) delete m.mountPropagation;
          if (byVolume.has(m.name) && !m.mountPath.startsWith('/host/') && m.mountPath !== '/sys/fs/bpf' && m.mountPath !== '/run/netns') m.mountPath = byVolume.get(m.name);
        }
      }
      o.extraMounts.forEach((dir, i) => {
        spec.volumes.push({ name: `kit-${i}`, hostPath: { path: dir, type: 'Directory' } });
        spec.containers[0].volumeMounts.push({ name: `kit-${i}`, mountPath: dir, mountPropagation: 'HostToContainer' });
      });
    }
    return x;
  });
}

/** Creates (or replaces) the objects through the API. */
export async function applyAll(kc: KubeConfig, objs: Obj[]): Promise<void> {
  const api = KubernetesObjectApi.makeApiClient(kc);
  for (const obj of objs) {
    try {
      await api.create(obj);
    } catch (err) {
      if ((err as { code?: number }).code !== 409) throw new Error(`create ${obj.kind} ${obj.metadata?.name}: ${(err as Error).message}`);
      await api.replace({ ...obj, metadata: { ...obj.metadata, resourceVersion: (await api.read(obj as Obj & { metadata: { name: string } })).metadata?.resourceVersion } } as Obj);
    }
  }
}

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** `kubectl exec POD -- CMD...` through the apiserver; code from the exec status (non-zero exit → its code). */
export async function podExec(kc: KubeConfig, namespace: string, pod: string, container: string, command: string[], timeoutMs = 30_000): Promise<ExecResult> {
  let stdout = '';
  let stderr = '';
  const sink = (add: (s: string) => void) => new Writable({ write(chunk, _e, cb) { add(String(chunk)); cb(); } });
  return new Promise<ExecResult>((resolve, reject) => {
    let settled = false;
    const finish = (r: ExecResult | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (r instanceof Error) reject(r);
      else resolve(r);
    };
    const timer = setTimeout(() => finish(new Error(`exec ${pod} ${command.join(' ')}: no status after ${timeoutMs} ms`)), timeoutMs);
    new Exec(kc)
      .exec(namespace, pod, container, command, sink((s) => (stdout += s)), sink((s) => (stderr += s)), null, false, (st: V1Status) => {
        let code = st.status === 'Success' ? 0 : 1;
        const cause = st.details?.causes?.find((c) => c.reason === 'ExitCode');
        if (cause?.message) code = Number(cause.message);
        // the socket may deliver the last output after the status: give it a moment to drain
        setTimeout(() => finish({ code, stdout, stderr }), 50);
      })
      .then((ws) => ws.on('close', () => setTimeout(() => finish({ code: -1, stdout, stderr: `${stderr}(stream closed without an exit status)` }), 200)))
      .catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}

export interface TendrilOnKit {
  /** Host dirs the DaemonSet uses (run-unique, under the kit's run dir). */
  dirs: { root: string; run: string; state: string; conf: string; bin: string; netns: string; criNetns: string };
  netns: string;
  socket: string;
  bpfRoot: string;
  /** Unmounts what setup mounted and removes the BPF root (after the kit's down.sh). */
  cleanup(): Promise<void>;
}

/**
 * Starts the kit's node with Tendril's CNI dirs and installs Tendril from install/kubernetes/ (adapted to the node
 * by kitOverlay): the image tarball is imported by node.sh. `wrapDir`: a dir listed first in the CNI bin dirs (the
 * bench's timing wrappers).
 */
export async function installOnKitNode(
  kit: { runDir: string; apiserverPort: number; script(name: string, args?: string[], env?: NodeJS.ProcessEnv): Promise<string> },
  o: { run: string; image: string; repo: string; kc: KubeConfig; wrapDir?: string },
): Promise<TendrilOnKit> {
  const sh = (argv: string[]) => execFileSync(argv[0]!, argv.slice(1), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const root = path.join(kit.runDir, 'tendril');
  const dirs = { root, run: `${root}/run`, state: `${root}/state`, conf: `${root}/net.d`, bin: `${root}/cni-bin`, netns: `${root}/netns`,
    criNetns: path.join(kit.runDir, 'node/containerd/state/io.containerd.grpc.v1.cri/netns') };
  const bpfRoot = `/sys/fs/bpf/tendril-${o.run}`;
  const mounts: string[] = [];
  const cleanup = async (): Promise<void> => {
    for (const m of [...mounts].reverse()) {
      try { sh(['umount', '-l', m]); } catch { /* already gone (down.sh unmounts what is left under the run dir) */ }
    }
    fs.rmSync(bpfRoot, { recursive: true, force: true });
  };
  try {
    for (const d of [dirs.run, dirs.state, dirs.conf, dirs.bin, dirs.netns, dirs.criNetns]) fs.mkdirSync(d, { recursive: true });
    // The host's / is a private mount here: the dirs the agent's pod shares mounts through (its health netns, the
    // runtime's pod netns files) become shared mounts of their own, as the kit does with the kubelet's root dir.
    for (const d of [dirs.root, dirs.criNetns]) {
      sh(['mount', '--bind', d, d]);
      mounts.push(d);
      sh(['mount', '--make-shared', d]);
    }
    // The kit links the CNI plugins when node.sh starts: the DaemonSet's install-cni replaces this file in place.
    fs.copyFileSync(path.join(o.repo, 'bin/tendril-cni'), `${dirs.bin}/tendril-cni`);
    fs.chmodSync(`${dirs.bin}/tendril-cni`, 0o755);
    await kit.script('node.sh', [], { K8S_CNI_BIN_DIR: [o.wrapDir, dirs.bin, '/usr/lib/cni'].filter(Boolean).join(':'), K8S_CNI_CONF_DIR: dirs.conf, K8S_IMAGES: o.image });
    const netns = /K8S_NETNS=['"]?([\w-]+)/.exec(fs.readFileSync(path.join(kit.runDir, 'node.env'), 'utf8'))![1]!;
    // The kit's node has only lo: the native device the agent attaches to (a veth pair inside the node netns).
    const inNode = (argv: string[]) => sh(['nsenter', `--net=/run/netns/${netns}`, '--', ...argv]);
    inNode(['ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p']);
    inNode(['ip', 'link', 'set', 'eth0', 'up']);
    inNode(['ip', 'link', 'set', 'eth0p', 'up']);
    const socket = `${dirs.run}/tendril.sock`;
    const objs = kitOverlay(installObjects(), {
      hostPaths: { '/var/run/tendril': dirs.run, '/var/lib/tendril': dirs.state, '/etc/cni/net.d': dirs.conf, '/opt/cni/bin': dirs.bin, '/run/netns': dirs.netns },
      extraMounts: [dirs.criNetns],
      // pins are files of the bpffs, seen by the host without propagation (the host's /sys/fs/bpf is private here)
      noPropagation: ['bpffs'],
      config: {
        'k8s-service-port': String(kit.apiserverPort),
        'bpf-root': bpfRoot,
        'health-netns': `tendril-health-${o.run}`,
        'cni-conf-dir': dirs.conf,
        'state-dir': dirs.state,
        socket,
        'enable-ipv4-masquerade': 'false',
      },
    });
    await applyAll(o.kc, objs);
    return { dirs, netns, socket, bpfRoot, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** Deletes the pods of a namespace and waits (bounded) until they are gone: the CNI DELs run while the agent still does. */
export async function deletePods(kc: KubeConfig, namespace: string, timeoutMs = 120_000): Promise<void> {
  const core = kc.makeApiClient(CoreV1Api);
  await core.deleteCollectionNamespacedPod({ namespace, gracePeriodSeconds: 0 }).catch(() => {});
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const left = await core.listNamespacedPod({ namespace }).then((l) => l.items.length, () => 0);
    if (left === 0) return;
    await new Promise((r) => setTimeout(r, 200));
  }
}
