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
  private readonly rest: Rest;

  constructor(conn: K8sConnection, nodeName: string, log: Logger) {
    this.log = log;
    const rest = new Rest(conn.kc, conn.server);
    this.rest = rest;
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

  /**
   * The pod's labels: the watched copy, else the pod read from the apiserver directly (one GET, sent as soon as the
   * watch is found not to have it: the CNI ADD of a kubelet's pod often arrives before the watch event, above all
   * while the node starts many pods), while the watch keeps being polled for up to `waitMs`; undefined if neither
   * had it by then. `stats` counts how the calls were answered.
   */
  async get(namespace: string, name: string, uid?: string, waitMs = 5000): Promise<PodInfo | undefined> {
    const deadline = Date.now() + waitMs;
    const want = (pod: V1Pod | undefined): pod is V1Pod => pod !== undefined && (uid === undefined || uid === '' || pod.metadata?.uid === uid);
    const watched = this.informer.get(name, namespace);
    if (want(watched)) {
      this.stats.watch++;
      return podInfo(watched);
    }
    let direct: V1Pod | undefined;
    let asked = true;
    void this.rest
      .request<V1Pod>('GET', `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/${encodeURIComponent(name)}`)
      .then((p) => { direct = p; }, (err: unknown) => this.log.debug({ pod: `${namespace}/${name}`, err: messageOf(err) }, 'pod GET failed; waiting for the watch'))
      .finally(() => { asked = false; });
    for (;;) {
      await new Promise((r) => setTimeout(r, asked ? 10 : 50));
      const pod = this.informer.get(name, namespace);
      if (want(pod)) {
        this.stats.watch++;
        return podInfo(pod);
      }
      if (want(direct)) {
        this.stats.direct++;
        return podInfo(direct);
      }
      if (Date.now() > deadline) {
        this.stats.missed++;
        return undefined;
      }
    }
  }

  /** How get() calls were answered: from the watch, by the direct GET, or not at all. */
  readonly stats = { watch: 0, direct: 0, missed: 0 };
}

function podInfo(pod: V1Pod): PodInfo {
  const annotations = Object.fromEntries(Object.entries(pod.metadata?.annotations ?? {}).filter(([k]) => !k.startsWith('kubectl.kubernetes.io/')));
  return { labels: { ...(pod.metadata?.labels ?? {}) }, annotations, serviceAccount: pod.spec?.serviceAccountName ?? 'default', uid: pod.metadata?.uid ?? '' };
}
