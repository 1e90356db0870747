// A lab in Kubernetes mode plays the kubelet for its pods: it runs their CNI ADD as a runtime does (lab.ts), so it is
// also what reports them to the apiserver as a kubelet would. After an ADD it registers the pod's node (a core Node
// with its InternalIP and a Ready condition, renewed through a kube-node-lease Lease by the lab's heartbeat process,
// k8s-heartbeat.ts) and writes the pod's status through the status subresource: phase Running, podIP/podIPs,
// hostIP/hostIPs, conditions PodScheduled/Initialized/ContainersReady/Ready, a running status per container. The
// real kube-controller-manager's endpoint-slice controller then writes the Services' EndpointSlices from it;
// `lab pod set-ready POD false` flips Ready/ContainersReady as a failing readiness probe would.
import { connect, Rest, RestError } from '../k8s/index.js';
import { LabError } from './errors.js';
import type { LabNode, LabPod } from './lab.js';

/** Annotation on the Nodes a lab registered (its name): only those are renewed by its heartbeat and removed by lab down. */
export const REGISTERED_BY = 'lab.tendril.io/registered-by';
/** As the kubelet's: lease duration 40 s, renewed every 10 s. */
export const LEASE_SECONDS = 40;
export const RENEW_MS = 10_000;
const LEASE_NS = 'kube-node-lease';

const notFound = (err: unknown): boolean => err instanceof RestError && err.code === 404;
const conflict = (err: unknown): boolean => err instanceof RestError && err.code === 409;
const now = (): string => new Date().toISOString().replace(/\.\d+Z$/, 'Z');
const microNow = (): string => new Date().toISOString().replace(/Z$/, '000Z');

function k8sFailed(what: string, err: unknown): LabError {
  return new LabError('TENDRIL_ERR_LAB_K8S', `${what}: ${(err as Error).message}`, { cause: err });
}

export function labRest(kubeconfig: string, timeoutMs = 10_000): Rest {
  const conn = connect(kubeconfig);
  return new Rest(conn.kc, conn.server, timeoutMs);
}

/**
 * The core Node of a lab node, as a kubelet registers itself: created when absent (labelled as kubelets label theirs,
 * annotated as the lab's), its status addresses and Ready condition written when it has no Ready condition yet. A
 * Node someone else made (a test that sets spec.podCIDRs, say) keeps its spec; it only gets that status if it had none.
 */
export async function registerNode(rest: Rest, lab: string, node: LabNode): Promise<void> {
  const path = `/api/v1/nodes/${encodeURIComponent(node.name)}`;
  let cur: Record<string, unknown> | undefined;
  try {
    cur = await rest.request('GET', path);
  } catch (err) {
    if (!notFound(err)) throw k8sFailed(`Cannot read Node ${node.name}`, err);
  }
  if (!cur) {
    try {
      cur = await rest.request('POST', '/api/v1/nodes', {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: node.name, labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64' }, annotations: { [REGISTERED_BY]: lab } },
      });
    } catch (err) {
      if (!conflict(err)) throw k8sFailed(`Cannot register Node ${node.name}`, err);
      cur = await rest.request('GET', path);
    }
  }
  const conditions = ((cur!['status'] as { conditions?: Array<{ type?: string }> } | undefined)?.conditions ?? []);
  if (conditions.some((c) => c.type === 'Ready')) return;
  const t = now();
  try {
    await rest.request('PATCH', `${path}/status`, {
      status: {
        addresses: [{ type: 'InternalIP', address: node.ip }, { type: 'Hostname', address: node.name }],
        conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady', message: `lab ${lab} runs this node's pods`, lastHeartbeatTime: t, lastTransitionTime: t }],
        nodeInfo: { kubeletVersion: 'lab', kubeProxyVersion: '', operatingSystem: 'linux', architecture: 'amd64', containerRuntimeVersion: 'lab://', kernelVersion: '', osImage: '', machineID: '', systemUUID: '', bootID: '' },
      },
    }, 'application/merge-patch+json');
  } catch (err) {
    throw k8sFailed(`Cannot write the status of Node ${node.name}`, err);
  }
  await renewLease(rest, node.name);
}

/** Renews (creates when absent) the node's Lease in kube-node-lease, the heartbeat the node lifecycle controller reads. */
export async function renewLease(rest: Rest, nodeName: string): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NS}/leases/${encodeURIComponent(nodeName)}`;
  const spec = { holderIdentity: nodeName, leaseDurationSeconds: LEASE_SECONDS, renewTime: microNow() };
  try {
    await rest.request('PATCH', path, { spec }, 'application/merge-patch+json');
  } catch (err) {
    if (!notFound(err)) throw k8sFailed(`Cannot renew the Lease of Node ${nodeName}`, err);
    try {
      await rest.request('POST', `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NS}/leases`, { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: nodeName, namespace: LEASE_NS }, spec });
    } catch (e) {
      if (!conflict(e)) throw k8sFailed(`Cannot create the Lease of Node ${nodeName}`, e);
    }
  }
}

/** The status a kubelet writes for a running pod (ready or not, as its readiness probe says). Pure. */
export function podStatus(pod: Pick<LabPod, 'ip'>, hostIP: string, containers: Array<{ name: string; image: string }>, ready: boolean, startedAt: string): Record<string, unknown> {
  const t = now();
  const r = ready ? 'True' : 'False';
  const cond = (type: string, status: string, extra: Record<string, string> = {}) => ({ type, status, lastProbeTime: null, lastTransitionTime: t, ...extra });
  const notReady = ready ? {} : { reason: 'ContainersNotReady', message: `containers with unready status: [${containers.map((c) => c.name).join(' ')}]` };
  return {
    phase: 'Running',
    hostIP,
    hostIPs: [{ ip: hostIP }],
    podIP: pod.ip,
    podIPs: [{ ip: pod.ip }],
    startTime: startedAt,
    conditions: [cond('PodReadyToStartContainers', 'True'), cond('Initialized', 'True'), cond('Ready', r, notReady), cond('ContainersReady', r, notReady), cond('PodScheduled', 'True')],
    containerStatuses: containers.map((c) => ({ name: c.name, image: c.image, imageID: '', containerID: '', ready, started: true, restartCount: 0, state: { running: { startedAt } } })),
  };
}

/**
 * Writes the pod's status as its kubelet would. A pod without an object in the apiserver (created only in the lab)
 * has nothing to report: false. Throws TENDRIL_ERR_LAB_K8S when the apiserver refuses the write.
 */
export async function writePodStatus(rest: Rest, pod: LabPod, hostIP: string, ready: boolean): Promise<boolean> {
  const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
  let obj: { spec?: { containers?: Array<{ name: string; image: string }> }; status?: { startTime?: string } };
  try {
    obj = await rest.request('GET', path);
  } catch (err) {
    if (notFound(err)) return false;
    throw k8sFailed(`Cannot read Pod ${pod.namespace}/${pod.name}`, err);
  }
  const containers = (obj.spec?.containers ?? []).map((c) => ({ name: c.name, image: c.image }));
  try {
    await rest.request('PATCH', `${path}/status`, { status: podStatus(pod, hostIP, containers, ready, obj.status?.startTime ?? now()) }, 'application/merge-patch+json');
  } catch (err) {
    throw k8sFailed(`Cannot write the status of Pod ${pod.namespace}/${pod.name}`, err);
  }
  return true;
}

/** After a pod's CNI ADD succeeded (Kubernetes mode): its node registered, its status Running and Ready. */
export async function reportPodStarted(kubeconfig: string, lab: string, node: LabNode, pod: LabPod): Promise<boolean> {
  const rest = labRest(kubeconfig);
  await registerNode(rest, lab, node);
  return writePodStatus(rest, pod, node.ip, true);
}

/** The Pod object a user's `kubectl run` and the scheduler would have made for a lab pod: its labels, node and ports. Pure. */
export function podObject(lab: string, pod: LabPod): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: pod.name,
      namespace: pod.namespace,
      labels: pod.labels,
      annotations: { ...(pod.annotations ?? {}), [REGISTERED_BY]: lab },
    },
    spec: {
      nodeName: pod.node,
      serviceAccountName: pod.serviceAccount ?? 'default',
      containers: [{
        name: 'main',
        image: 'lab',
        ...(pod.ports?.length ? { ports: pod.ports.map((p) => ({ ...(p.name ? { name: p.name } : {}), containerPort: p.port, protocol: p.protocol ?? 'TCP' })) } : {}),
      }],
    },
  };
}

/**
 * Before a lab pod's CNI ADD in Kubernetes mode: its Pod object, created (with its namespace and the namespace's
 * default ServiceAccount when absent) unless someone made it already. True when the lab created it (then lab pod del
 * deletes it); a Pod that exists is used as it is, as a kubelet runs the pods it is given.
 */
export async function ensurePodObject(kubeconfig: string, lab: string, pod: LabPod): Promise<boolean> {
  const rest = labRest(kubeconfig);
  const ns = encodeURIComponent(pod.namespace);
  try {
    await rest.request('GET', `/api/v1/namespaces/${ns}/pods/${encodeURIComponent(pod.name)}`);
    return false;
  } catch (err) {
    if (!notFound(err)) throw k8sFailed(`Cannot read Pod ${pod.namespace}/${pod.name}`, err);
  }
  const create = async (what: string, path: string, body: Record<string, unknown>): Promise<void> => {
    try {
      await rest.request('POST', path, body);
    } catch (err) {
      if (!conflict(err)) throw k8sFailed(`Cannot create ${what}`, err);
    }
  };
  try {
    await rest.request('GET', `/api/v1/namespaces/${ns}`);
  } catch (err) {
    if (!notFound(err)) throw k8sFailed(`Cannot read Namespace ${pod.namespace}`, err);
    await create(`Namespace ${pod.namespace}`, '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: pod.namespace } });
  }
  // The ServiceAccount admission refuses a pod whose account does not exist yet (the controller-manager makes
  // "default" a moment after the namespace; without one, nobody does).
  const sa = pod.serviceAccount ?? 'default';
  try {
    await rest.request('GET', `/api/v1/namespaces/${ns}/serviceaccounts/${encodeURIComponent(sa)}`);
  } catch (err) {
    if (!notFound(err)) throw k8sFailed(`Cannot read ServiceAccount ${pod.namespace}/${sa}`, err);
    await create(`ServiceAccount ${pod.namespace}/${sa}`, `/api/v1/namespaces/${ns}/serviceaccounts`, { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: sa, namespace: pod.namespace } });
  }
  await create(`Pod ${pod.namespace}/${pod.name}`, `/api/v1/namespaces/${ns}/pods`, podObject(lab, pod));
  return true;
}

/** After a lab pod's CNI DEL: its Pod object, if this lab created it (best effort: the apiserver may be gone). */
export async function deletePodObject(kubeconfig: string, lab: string, pod: LabPod): Promise<boolean> {
  const rest = labRest(kubeconfig, 3000);
  const path = `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`;
  try {
    const cur = await rest.request<{ metadata?: { annotations?: Record<string, string> } }>('GET', path);
    if (cur.metadata?.annotations?.[REGISTERED_BY] !== lab) return false;
    await rest.request('DELETE', `${path}?gracePeriodSeconds=0`);
    return true;
  } catch {
    return false;
  }
}

/** The Nodes this lab registered, removed at lab down (their Leases with them); best effort, bounded. */
export async function unregisterNodes(kubeconfig: string, lab: string, nodes: readonly string[]): Promise<string[]> {
  const rest = labRest(kubeconfig, 3000);
  const removed: string[] = [];
  for (const name of nodes) {
    try {
      const n = await rest.request<{ metadata?: { annotations?: Record<string, string> } }>('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
      if (n.metadata?.annotations?.[REGISTERED_BY] !== lab) continue;
      await rest.request('DELETE', `/api/v1/nodes/${encodeURIComponent(name)}`);
      await rest.request('DELETE', `/apis/coordination.k8s.io/v1/namespaces/${LEASE_NS}/leases/${encodeURIComponent(name)}`).catch(() => {});
      removed.push(`Node ${name}`);
    } catch {
      // the apiserver is gone or the node was never registered: nothing of ours to remove there
    }
  }
  return removed;
}
