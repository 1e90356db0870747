// The pods of this node, watched (a client-node informer with fieldSelector spec.nodeName): the CNI ADD of a
// kubelet's pod names it (K8S_POD_NAMESPACE/K8S_POD_NAME) and the agent takes its labels and service account from
// here (and its annotations, for the IP pool it asks for), waiting briefly when the watch has not delivered the pod yet.
import { ListWatch, Watch, type KubernetesListObject, type V1Pod } from '@kubernetes/client-node';
import type { Logger } from '../util/log.js';
import type { K8sConnection } from './client.js';
import { messageOf } from './errors.js';
import { Rest } from './rest.js';

export interface PodInfo {
  labels: Record<string, string>;
  /** The pod's annotations (ipam.tendril.io/ip-pool: its IP pool), without kubectl's bookkeeping. */
  annotations: Record<string, string>;
  serviceAccount: string;
  uid: string;
}

const RESTART_MS = 1000;

export class PodSource {
  private readonly informer: ListWatch<V1Pod>;
  private readonly log: Logger;
  private started: Promise<void> | undefined;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;

  constructor(conn: K8sConnection, nodeName: string, log: Logger) {
    this.log = log;
    const rest = new Rest(conn.kc, conn.server);
    const selector = `spec.nodeName=${nodeName}`;
    const listFn = (): Promise<KubernetesListObject<V1Pod>> => rest.request('GET', `/api/v1/pods?fieldSelector=${encodeURIComponent(selector)}`);
    this.informer = new ListWatch<V1Pod>('/api/v1/pods', new Watch(conn.kc), listFn, false, undefined, selector);
    this.informer.on('error', (err: unknown) => {
      if (this.stopped) return;
      this.log.warn({ err: messageOf(err) }, 'pod watch failed; restarting');
      this.retry = setTimeout(() => void this.informer.start().catch(() => {}), RESTART_MS);
    });
  }

  /** Starts watching in the background (a failed first list is retried by the error handler). */
  start(): void {
    this.started ??= this.informer.start().catch((err: unknown) => this.log.warn({ err: messageOf(err) }, 'pod list failed; retrying'));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
    await this.informer.stop();
  }

  /** The pod's labels, waiting up to `waitMs` for the watch to deliver it; undefined if it never came. */
  async get(namespace: string, name: string, uid?: string, waitMs = 5000): Promise<PodInfo | undefined> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      const pod = this.informer.get(name, namespace);
      if (pod && (uid === undefined || uid === '' || pod.metadata?.uid === uid)) {
        const annotations = Object.fromEntries(Object.entries(pod.metadata?.annotations ?? {}).filter(([k]) => !k.startsWith('kubectl.kubernetes.io/')));
        return { labels: { ...(pod.metadata?.labels ?? {}) }, annotations, serviceAccount: pod.spec?.serviceAccountName ?? 'default', uid: pod.metadata?.uid ?? '' };
      }
      if (Date.now() > deadline) return undefined;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
