// PLACEHOLDER identities until the identity issue (#4) allocates them cluster-wide through the store.
// Reserved numbers are Cilium's; a pod's number is a deterministic hash of its security labels, so the same
// label set gets the same number on every node, but two label sets may collide. Do not build policy on it.
import { createHash } from 'node:crypto';

export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
export const IDENTITY_UNMANAGED = 3;
export const IDENTITY_HEALTH = 4;
export const IDENTITY_INIT = 5;
export const IDENTITY_REMOTE_NODE = 6;

/** Security labels of a pod, Cilium style: `k8s:app=curl`, `k8s:io.kubernetes.pod.namespace=default`. */
export function securityLabels(namespace: string, labels: Record<string, string>): string[] {
  const out = Object.entries(labels).map(([k, v]) => `k8s:${k}=${v}`);
  out.push(`k8s:io.kubernetes.pod.namespace=${namespace}`);
  return out.sort();
}

/** PLACEHOLDER: hash of the sorted label set into the global identity range 256..65535. */
export function placeholderIdentity(labels: string[]): number {
  const h = createHash('sha256').update([...labels].sort().join(',')).digest();
  return 256 + (h.readUInt32BE(0) % (65536 - 256));
}
