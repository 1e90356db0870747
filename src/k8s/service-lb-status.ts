// Kubernetes mode, operator: LB IPAM's outcome (store kind ServiceStatus, a TendrilServiceStatus) also on the core
// Service, status.loadBalancer.ingress, so `kubectl get svc` shows the EXTERNAL-IP as with any load balancer.
import type { ServiceStatusSpec } from '../lb/lb-pool.js';
import { KindCache } from '../store/cache.js';
import type { Store } from '../store/types.js';
import type { Logger } from '../util/log.js';
import type { K8sConnection } from './client.js';
import { messageOf, statusOf } from './errors.js';
import { Rest } from './rest.js';

const RETRY_MS = 1000;

export class ServiceLbStatusWriter {
  private readonly rest: Rest;
  private readonly cache: KindCache<ServiceStatusSpec>;
  private readonly log: Logger;
  /** "<namespace>.<name>" -> the ingress IPs to write ([] once its ServiceStatus is gone). */
  private readonly want = new Map<string, string[]>();
  /** What the Service was last patched to. */
  private readonly written = new Map<string, string>();
  private running = false;
  private flushing: Promise<void> | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(conn: K8sConnection, store: Store, log: Logger) {
    this.rest = new Rest(conn.kc, conn.server);
    this.cache = new KindCache<ServiceStatusSpec>(store, 'ServiceStatus', log);
    this.log = log;
  }

  async start(): Promise<void> {
    this.running = true;
    await this.cache.start({
      change: (name, v) => this.set(name, v?.loadBalancer.ingress ?? []),
      resync: (all) => {
        for (const name of [...this.written.keys(), ...this.want.keys()]) if (!all.has(name)) this.set(name, []);
        for (const [name, v] of all) this.set(name, v.loadBalancer.ingress);
      },
    });
  }

  stop(): void {
    this.running = false;
    this.cache.stop();
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
  }

  private set(name: string, ips: string[]): void {
    this.want.set(name, [...ips]);
    this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
  }

  private async flush(): Promise<void> {
    let failed = false;
    while (this.running && this.want.size > 0) {
      const [name, ips] = this.want.entries().next().value as [string, string[]];
      this.want.delete(name);
      const key = JSON.stringify(ips);
      if (this.written.get(name) === key) continue;
      const i = name.indexOf('.');
      const path = `/api/v1/namespaces/${encodeURIComponent(name.slice(0, i))}/services/${encodeURIComponent(name.slice(i + 1))}/status`;
      try {
        await this.rest.request('PATCH', path, { status: { loadBalancer: { ingress: ips.map((ip) => ({ ip })) } } }, 'application/merge-patch+json');
        this.written.set(name, key);
      } catch (err) {
        if (statusOf(err) === 404) {
          this.written.delete(name);
          continue;
        }
        this.log.warn({ service: name, err: messageOf(err) }, 'cannot write the Service\'s status.loadBalancer; retrying');
        failed = true;
        if (!this.want.has(name)) this.want.set(name, ips);
        break;
      }
    }
    if (failed && this.running && !this.retry) {
      this.retry = setTimeout(() => {
        this.retry = undefined;
        if (this.want.size > 0) this.flushing ??= this.flush().finally(() => (this.flushing = undefined));
      }, RETRY_MS);
      this.retry.unref();
    }
  }
}
