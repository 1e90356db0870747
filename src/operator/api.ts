// The operator's API contract: what each route under /v1 answers, typed once. The operator builds these views; the
// lab (and through it the CLI) reads them via index.ts. Errors are the agent API's: {code, message}.
import type { NodeSpec } from '../store/types.js';

export type { OperatorStatusResponse as OperatorStatusView } from './main.js';

/** GET /v1/nodes: the cluster's nodes with their store revision. */
export type OperatorNodeView = NodeSpec & { revision: number };

/** DELETE /v1/nodes/{name}: the node left the cluster. */
export interface NodeDeleteResult {
  deleted: string;
}

/** GET /v1/policies: every stored policy, as written. */
export interface StoredPolicyView {
  /** Store name: "<kind>.<namespace>.<name>". */
  resource: string;
  revision: number;
  document: unknown;
}

/** One policy of PUT /v1/policies. */
export interface AppliedPolicy {
  /** "<kind>/<namespace>/<name>" as the agents name it. */
  key: string;
  resource: string;
  revision: number;
}

/** PUT /v1/policies ({"text": "...", "origin": "file.yaml"}): every document parsed, then all stored. */
export interface PolicyApplyResult {
  applied: AppliedPolicy[];
}

/** DELETE /v1/policies/{ref}: the resource deleted and the store's revision after it. */
export interface PolicyDeleteResult {
  deleted: string;
  revision: number;
}

/** GET /v1/namespaces (a list) and PATCH /v1/namespaces/{name} (one, with its revision). */
export interface NamespaceView {
  name: string;
  labels: Record<string, string>;
  revision?: number;
}
