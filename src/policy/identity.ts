// Reserved identities (Cilium numbering), security-label parsing and label-selector matching.
import type { IdentityInfo, LabelRequirement, Selector } from './types.js';

export const IDENTITY_ANY = 0;
export const IDENTITY_HOST = 1;
export const IDENTITY_WORLD = 2;
export const IDENTITY_UNMANAGED = 3;
export const IDENTITY_HEALTH = 4;
export const IDENTITY_INIT = 5;
export const IDENTITY_REMOTE_NODE = 6;
/** First identity allocated for pods (cluster-scoped); everything below is reserved. */
export const IDENTITY_MIN_CLUSTER = 256;

export const LABEL_POD_NAMESPACE = 'io.kubernetes.pod.namespace';
/** The label Kubernetes sets on every namespace: its name. */
export const LABEL_NAMESPACE_NAME = 'kubernetes.io/metadata.name';
/** Namespace labels become pod security labels under this key prefix (Cilium's convention). */
export const LABEL_NAMESPACE_LABELS_PREFIX = 'io.cilium.k8s.namespace.labels.';

const RESERVED: readonly [number, string][] = [
  [IDENTITY_HOST, 'host'],
  [IDENTITY_WORLD, 'world'],
  [IDENTITY_UNMANAGED, 'unmanaged'],
  [IDENTITY_HEALTH, 'health'],
  [IDENTITY_INIT, 'init'],
  [IDENTITY_REMOTE_NODE, 'remote-node'],
];

/** The reserved identities every cluster has, with their "reserved:<name>" label. */
export function reservedIdentities(): IdentityInfo[] {
  return RESERVED.map(([id, name]) => ({ id, labels: [`reserved:${name}`] }));
}

/** Name of a reserved identity ("host"), or undefined. */
export function reservedIdentityName(id: number): string | undefined {
  return RESERVED.find(([n]) => n === id)?.[1];
}

/** Labels of one identity indexed by key: key -> [{source, value}]. Built once per identity. */
export type LabelIndex = Map<string, { source: string; value: string }[]>;

/** Splits "source:key=value" (value optional, source optional = "unspec"). Keys never hold ':' or '='. */
export function parseLabel(label: string): { source: string; key: string; value: string } {
  const colon = label.indexOf(':');
  const eq = label.indexOf('=');
  const hasSource = colon >= 0 && (eq < 0 || colon < eq);
  const source = hasSource ? label.slice(0, colon) : 'unspec';
  const rest = hasSource ? label.slice(colon + 1) : label;
  const e = rest.indexOf('=');
  return e < 0 ? { source, key: rest, value: '' } : { source, key: rest.slice(0, e), value: rest.slice(e + 1) };
}

export function indexLabels(labels: readonly string[]): LabelIndex {
  const index: LabelIndex = new Map();
  for (const l of labels) {
    const { source, key, value } = parseLabel(l);
    const list = index.get(key);
    if (list) list.push({ source, value });
    else index.set(key, [{ source, value }]);
  }
  return index;
}

function requirementHolds(r: LabelRequirement, labels: LabelIndex): boolean {
  const found = labels.get(r.key);
  let present = false;
  let inValues = false;
  if (found) {
    for (const l of found) {
      if (r.source !== null && l.source !== r.source) continue;
      present = true;
      if (r.values.includes(l.value)) inValues = true;
    }
  }
  switch (r.operator) {
    case 'In':
      return inValues;
    case 'NotIn':
      // Kubernetes semantics: a missing label satisfies NotIn.
      return !inValues;
    case 'Exists':
      return present;
    case 'DoesNotExist':
      return !present;
  }
}

export function selectorMatches(s: Selector, labels: LabelIndex): boolean {
  for (const r of s.requirements) if (!requirementHolds(r, labels)) return false;
  return true;
}

/** Label value of key with the given source (first one), or undefined. */
export function labelValue(labels: LabelIndex, source: string, key: string): string | undefined {
  return labels.get(key)?.find((l) => l.source === source)?.value;
}
