// Kubernetes mode of a component: the connection, the Store over the apiserver, and the apiserver's version for
// `status` (probed in the background, so that status answers at once whatever the apiserver does).
import type { Logger } from '../util/log.js';
import { connect, serverVersion, type K8sConnection, type K8sVersion } from './client.js';
import { NodeCidrSource } from './node-cidrs.js';
import { PodSource } from './pods.js';
import { KubernetesStore } from './store.js';
import type { KubernetesStatusView } from './status.js';

const PROBE_MS = 10_000;

export class KubernetesMode {
  readonly conn: K8sConnection;
  readonly store: KubernetesStore;
  private version: K8sVersion | undefined;
  private error: string | undefined = 'not probed yet';
  private timer: NodeJS.Timeout | undefined;
  private readonly log: Logger;

  /** The agent's: this node's pods (their labels for CNI ADDs). */
  pods: PodSource | undefined;

  /** kubeconfig undefined: in-cluster config. Throws TENDRIL_ERR_K8S_CONFIG. */
  constructor(kubeconfig: string | undefined, log: Logger) {
    this.conn = connect(kubeconfig);
    this.log = log;
    this.store = new KubernetesStore(this.conn, { log });
  }

  /** Starts probing the apiserver's version (first probe awaited, not required to succeed). */
  async start(): Promise<void> {
    await this.probe();
    this.timer = setInterval(() => void this.probe(), PROBE_MS);
    this.timer.unref();
  }

  /** Watches the pods scheduled to this node (the agent). */
  watchPods(nodeName: string): PodSource {
    this.pods ??= new PodSource(this.conn, nodeName, this.log.child({ subsys: 'pods' }));
    this.pods.start();
    return this.pods;
  }

  /** --ipam kubernetes: this node's core Node spec.podCIDRs (the agent). */
  nodeCidrs: NodeCidrSource | undefined;

  watchNodeCidrs(nodeName: string, onChange: (cidrs: string[]) => void): NodeCidrSource {
    this.nodeCidrs ??= new NodeCidrSource(this.conn, nodeName, this.log.child({ subsys: 'node-cidrs' }), onChange);
    this.nodeCidrs.start();
    return this.nodeCidrs;
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.pods?.stop();
    await this.nodeCidrs?.stop();
  }

  private async probe(): Promise<void> {
    try {
      this.version = await serverVersion(this.conn);
      if (this.error !== undefined) this.log.info({ server: this.conn.server, version: this.version.gitVersion }, 'Kubernetes apiserver reachable');
      this.error = undefined;
    } catch (err) {
      if (this.error === undefined) this.log.warn({ err: (err as Error).message }, 'Kubernetes apiserver unreachable');
      this.error = (err as Error).message;
    }
  }

  view(): KubernetesStatusView {
    return {
      ok: this.error === undefined,
      server: this.conn.server,
      version: this.version?.minor ?? null,
      'git-version': this.version?.gitVersion ?? null,
      error: this.error ?? null,
    };
  }
}
