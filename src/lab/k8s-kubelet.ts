// What the lab does as its pods' kubelet in Kubernetes mode (k8s-pods.ts has the API side): report a pod once its
// CNI ADD succeeded, flip its readiness on request (`lab pod set-ready`), and remove the Nodes it registered at lab down.
import { LabError } from './errors.js';
import { findPod, loadLab, type LabPod, type LabState } from './lab.js';
import { ensureHeartbeat } from './k8s-heartbeat.js';
import { deletePodObject, ensurePodObject, labRest, registerNode, unregisterNodes, writePodStatus } from './k8s-pods.js';

function nodeOf(st: LabState, pod: LabPod) {
  const node = st.nodes.find((n) => n.name === pod.node);
  if (!node) throw new LabError('TENDRIL_ERR_LAB_NODE_NOT_FOUND', `Node ${pod.node} of pod ${pod.namespace}/${pod.name} not found in lab "${st.name}"`);
  return node;
}

/** Before the ADD: the pod's Pod object, made when nobody made it (true: the lab made it, and deletes it at lab pod del). */
export async function labPodCreating(st: LabState, pod: LabPod): Promise<boolean> {
  return st.kubeconfig ? ensurePodObject(st.kubeconfig, st.name, pod) : false;
}

/** After the DEL: the Pod object, if the lab made it. */
export async function labPodDeleted(st: LabState, pod: LabPod): Promise<void> {
  if (st.kubeconfig) await deletePodObject(st.kubeconfig, st.name, pod);
}

/** After the ADD: the node registered (and heartbeating), the pod Running and Ready; false when it has no Pod object. */
export async function labPodStarted(st: LabState, pod: LabPod): Promise<boolean> {
  if (!st.kubeconfig) return false;
  const node = nodeOf(st, pod);
  const rest = labRest(st.kubeconfig);
  await registerNode(rest, st.name, node);
  ensureHeartbeat(st.name, st.kubeconfig);
  return writePodStatus(rest, pod, node.ip, true);
}

/** `lab pod set-ready POD true|false`: the pod's Ready and ContainersReady conditions, as its readiness probe would set them. */
export async function labPodSetReady(lab: string, ref: string, ready: boolean): Promise<LabPod> {
  const st = loadLab(lab);
  if (!st.kubeconfig) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Lab "${lab}" is not in Kubernetes mode (started with a kubeconfig): its pods have no Kubernetes status to set`);
  const pod = findPod(st, ref);
  if (!(await writePodStatus(labRest(st.kubeconfig), pod, nodeOf(st, pod).ip, ready))) {
    throw new LabError('TENDRIL_ERR_LAB_POD_NOT_FOUND', `Pod ${pod.namespace}/${pod.name} has no object in the apiserver: create it there (kubectl) before lab pod add`);
  }
  return pod;
}

/** lab node del: the node's Node, if the lab registered it (best effort). */
export async function labK8sNodeGone(st: LabState, node: string): Promise<void> {
  if (st.kubeconfig) await unregisterNodes(st.kubeconfig, st.name, [node]);
}

/** lab down: the Nodes this lab registered (best effort: the apiserver may be gone already). */
export async function labK8sDown(lab: string): Promise<string[]> {
  let st: LabState;
  try {
    st = loadLab(lab);
  } catch {
    return [];
  }
  return st.kubeconfig ? unregisterNodes(st.kubeconfig, lab, st.nodes.map((n) => n.name)) : [];
}
