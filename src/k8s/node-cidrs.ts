// This node's core Node, watched (a client-node informer with fieldSelector metadata.name): with --ipam kubernetes
// in Kubernetes mode, the pod CIDRs kube-controller-manager (or whoever runs IPAM) put in spec.podCIDRs are the
// node's, as Cilium's agent takes them from its v1.Node.
import { ListWatch, Watch, type KubernetesListObject, type V1Node } from '@kubernetes/client-node';
import type { Logger } from '../util/log.js';
import type { K8sConnection } from './client.js';
import { messageOf } from './errors.js';
import { Rest } from './rest.js';

const RESTART_MS = 1000;

/** spec.podCIDRs, else the older single spec.podCIDR. */
export function nodePodCidrs(node: Pick<V1Node, 'spec'>): string[] {
  const s = node.spec ?? {};
  if (s.podCIDRs && s.podCIDRs.length > 0) return [...s.podCIDRs];
  return s.podCIDR ? [s.podCIDR] : [];
}

export class NodeCidrSource {
  private readonly informer: ListWatch<V1Node>;
  private readonly log: Logger;
  private started: Promise<void> | undefined;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private last: string[] = [];

  /** onChange: called with the CIDRs whenever they change to a non-empty list. */
  constructor(conn: K8sConnection, nodeName: string, log: Logger, onChange: (cidrs: string[]) => void) {
    this.log = log;
    const rest = new Rest(conn.kc, conn.server);
    const selector = `metadata.name=${nodeName}`;
    const listFn = (): Promise<KubernetesListObject<V1Node>> => rest.request('GET', `/api/v1/nodes?fieldSelector=${encodeURIComponent(selector)}`);
    this.informer = new ListWatch<V1Node>('/api/v1/nodes', new Watch(conn.kc), listFn, false, undefined, selector);
    const seen = (n: V1Node): void => {
      const cidrs = nodePodCidrs(n);
      if (cidrs.length === 0 || cidrs.join(',') === this.last.join(',')) return;
      this.last = cidrs;
      this.log.info({ node: nodeName, podCIDRs: cidrs }, 'pod CIDRs from the Kubernetes Node');
      onChange(cidrs);
    };
    this.informer.on('add', seen);
    this.informer.on('update', seen);
    this.informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.log.warn({ err: messageOf(err) }, 'node watch failed; restarting');
      this.retry = setTimeout(() => void this.informer.start().catch(() => {}), RESTART_MS);
    });
  }

  /** The CIDRs seen last (empty before any). */
  current(): string[] {
    return this.last;
  }

  start(): void {
    this.started ??= this.informer.start().catch((err: unknown) => this.log.warn({ err: messageOf(err) }, 'node list failed; retrying'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.informer.stop();
  }
}
