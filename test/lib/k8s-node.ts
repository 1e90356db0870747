// Tendril installed on the kit's kubelet node from install/kubernetes/ (the DaemonSet and the Deployment, run by
// the kubelet from the image scripts/build-image.sh makes), and running commands in pods through the apiserver
// (exec, as kubectl exec does: the kit has no kubectl and npm has no real kubectl binary, so
// @kubernetes/client-node's Exec over the apiserver → kubelet → containerd stream).
import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Exec, KubeConfig, KubernetesObjectApi, type KubernetesObject, type V1Status } from '@kubernetes/client-node';
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
