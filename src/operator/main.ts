// Composition root of `tendril operator`: store (hosted or remote), the Operator, and its status API socket.
import fs from 'node:fs';
import os from 'node:os';
import { GuardedStore, LocalStoreServer, openStore, type Store } from '../store/index.js';
import type { NodeSpec } from '../store/types.js';
import { ApiServer, HttpError } from '../util/api.js';
import { SocketClaimError } from '../util/socket.js';
import { rootLogger, type Logger } from '../util/log.js';
import { operatorConfig, type OperatorConfig, type OperatorFlags } from './config.js';
import { OperatorError } from './errors.js';
import { Operator, type OperatorStatus } from './operator.js';
import { registerResourceRoutes } from './resources.js';
import { registerServiceRoutes } from '../lb/routes.js';
import { registerNodeCidrRoutes } from './node-cidrs.js';
import { registerPoolRoutes } from './multi-pool.js';
import { LbIpam, type LbIpamStatus } from './lb-ipam.js';
import { registerLbPoolRoutes } from './lb-ipam-routes.js';
import type { NodeDeleteResult, OperatorNodeView } from './api.js';
import { IdentityGc, type IdentityGcStatus } from './identity-gc.js';
import { EgressOperator, registerEgressRoutes, type EgressOperatorStatus } from '../egress/index.js';
import { installCrds, KubernetesMode, LeaseElector, Rest, ServiceLbStatusWriter, type KubernetesStatusView } from '../k8s/index.js';

export interface RunOperatorOptions extends OperatorFlags {
  /** Logger to use instead of the root logger (tests). */
  log?: Logger;
  /** Kubernetes mode: what to do when the lease is lost (default: exit, so that the pod restarts as a follower). */
  onLostLeadership?: () => void;
}

/** Body of GET /v1/status. */
export interface OperatorStatusResponse extends OperatorStatus {
  identityGc: IdentityGcStatus;
  lbIpam: LbIpamStatus;
  egressGateway: EgressOperatorStatus;
  store: OperatorStatus['store'] & {
    /** Present when this process hosts the local store. */
    hosted?: { url: string; dataDir: string; revision: number };
    ping: { ok: boolean; revision?: number; error?: string };
  };
  /** Kubernetes mode: the apiserver, and the leader election (only the leader allocates and collects). */
  kubernetes?: KubernetesStatusView & { leader: boolean; holder: string; identity: string };
}

export interface RunningOperator {
  readonly config: OperatorConfig;
  readonly operator: Operator;
  readonly store: Store;
  /** The hosted local store, with --store-listen. */
  readonly storeServer: LocalStoreServer | undefined;
  /** The URL agents pass as --store (the hosted store's, or the one given). */
  readonly storeUrl: string;
  statusResponse(): Promise<OperatorStatusResponse>;
  /** Stops the API, the operator, the store client and the hosted store, in that order. */
  stop(): Promise<void>;
}

/** Starts everything; on any failure undoes what was started and rethrows. */
export async function runOperator(opts: RunOperatorOptions): Promise<RunningOperator> {
  const cfg = operatorConfig(opts);
  const log = opts.log ?? rootLogger(cfg.logFile ? { file: cfg.logFile } : {}).child({ subsys: 'operator' });
  // Undo list: each started piece pushes its own stop, unwound in reverse on failure and on stop().
  const undo: Array<() => Promise<void>> = [];
  const unwind = async (): Promise<void> => {
    while (undo.length > 0) {
      const step = undo.pop()!;
      await step().catch((err: unknown) => log.warn({ err }, 'error while stopping'));
    }
  };

  try {
    let storeServer: LocalStoreServer | undefined;
    let storeUrl: string;
    let kubernetes: KubernetesMode | undefined;
    if (cfg.store.mode === 'host') {
      fs.mkdirSync(cfg.store.dataDir, { recursive: true, mode: 0o700 });
      const server = new LocalStoreServer({ dataDir: cfg.store.dataDir });
      await server.listen(cfg.store.listen);
      undo.push(() => server.close());
      storeServer = server;
      storeUrl = server.url;
      log.info({ url: storeUrl, dataDir: cfg.store.dataDir }, 'hosting the local store');
    } else if (cfg.store.mode === 'kubernetes') {
      const k = new KubernetesMode(cfg.store.kubeconfig, log.child({ subsys: 'k8s' }));
      kubernetes = k;
      await k.start();
      undo.push(() => k.stop());
      const crds = await installCrds(k.conn);
      log.info(crds, 'Tendril CRDs in place');
      storeUrl = k.store.description;
    } else {
      storeUrl = cfg.store.url;
    }
    // As the agent's: calls bounded and failing fast while etcd is away or hung, so `policy apply` through the
    // operator answers at once with a coded "store unavailable" instead of after the client's own timeouts.
    const store = new GuardedStore(kubernetes?.store ?? openStore(storeUrl, { connectTimeoutMs: 1000, requestTimeoutMs: 3000 }), {
      onChange: (up, error) => (up ? log.info('cluster store reachable again') : log.warn({ err: error }, 'cluster store unavailable')),
    });
    store.start();
    undo.push(() => store.close());

    const operator = new Operator({ store, ipam: cfg.ipam, pool: cfg.pool, graceMs: cfg.graceMs, log });
    const identityGc = new IdentityGc({ store, log: log.child({ subsys: 'identity-gc' }), intervalMs: cfg.identityGcIntervalMs, graceMs: cfg.identityGcGraceMs });
    const lbIpam = new LbIpam({ store, log: log.child({ subsys: 'lb-ipam' }) });
    const egress = new EgressOperator({ store, pool: cfg.egressIpPool, nodeGraceMs: cfg.nodeMonitorGracePeriodMs, log: log.child({ subsys: 'egress-gateway' }) });
    const lead = async (): Promise<void> => {
      await operator.start();
      undo.push(() => operator.stop());
      await identityGc.start();
      undo.push(() => identityGc.stop());
      // In Kubernetes mode too: the core Services (labels, annotations) and the tendril.io pool, status, lease and
      // egress policy CRDs are store kinds there (src/k8s/bindings.ts).
      await lbIpam.start();
      undo.push(() => lbIpam.stop());
      await egress.start();
      undo.push(() => egress.stop());
      if (kubernetes) {
        // The LoadBalancer IPs also on the core Services (kubectl get svc: EXTERNAL-IP).
        const lbStatus = new ServiceLbStatusWriter(kubernetes.conn, store, log.child({ subsys: 'service-lb-status' }));
        await lbStatus.start();
        undo.push(async () => lbStatus.stop());
      }
    };
    let elector: LeaseElector | undefined;
    let leadRetry: NodeJS.Timeout | undefined;
    if (kubernetes && cfg.store.mode === 'kubernetes') {
      // Replicas: only the Lease's holder allocates CIDRs and collects identities; the others wait to take over.
      const lost = opts.onLostLeadership ?? ((): void => {
        log.fatal('lost the operator lease; exiting so that this replica restarts as a follower');
        process.exit(1);
      });
      const e = new LeaseElector(new Rest(kubernetes.conn.kc, kubernetes.conn.server), {
        namespace: cfg.store.leaseNamespace,
        name: 'tendril-operator',
        identity: `${os.hostname()}_${process.pid}`,
        leaseDurationMs: cfg.store.leaseDurationMs,
        retryMs: Math.max(200, Math.round(cfg.store.leaseDurationMs / 5)),
        log: log.child({ subsys: 'leader-election' }),
        onStartedLeading: () => {
          // The apiserver may still be setting up a CRD installed a moment ago: retried while this replica leads.
          const attempt = (): void => {
            lead().catch((err: unknown) => {
              log.warn({ err: (err as Error).message }, 'operator failed to start as the leader; retrying');
              if (e.isLeader) leadRetry = setTimeout(attempt, 2000);
            });
          };
          attempt();
        },
        onStoppedLeading: lost,
      });
      elector = e;
      e.start();
      undo.push(async () => {
        clearTimeout(leadRetry);
        await e.stop();
      });
    } else {
      await lead();
    }

    const statusResponse = async (): Promise<OperatorStatusResponse> => {
      const st = operator.status();
      const ping = await store.ping().catch((err: unknown) => ({ ok: false, error: (err as Error).message }));
      const hosted = storeServer
        ? { hosted: { url: storeUrl, dataDir: cfg.store.mode === 'host' ? cfg.store.dataDir : '', revision: storeServer.revision } }
        : {};
      const k8s = kubernetes && elector ? { kubernetes: { ...kubernetes.view(), leader: elector.isLeader, holder: elector.holder, identity: `${os.hostname()}_${process.pid}` } } : {};
      return { ...st, store: { ...st.store, ...hosted, ping }, identityGc: identityGc.status(), lbIpam: lbIpam.status(), egressGateway: egress.status(), ...k8s };
    };

    const api = await serveStatus(cfg.apiSocket, statusResponse, store, log, cfg.ipam, (a) => {
      registerPoolRoutes(a, store, { mode: () => cfg.ipam, defaultCidrs: () => cfg.pool.cidrs, status: () => operator.status().pools ?? [], refresh: () => operator.refresh() });
      registerLbPoolRoutes(a, store, lbIpam);
    });
    undo.push(() => api.close());
    log.info({ apiSocket: cfg.apiSocket }, 'status API listening');

    let stopping: Promise<void> | undefined;
    return {
      config: cfg,
      operator,
      store,
      storeServer,
      storeUrl,
      statusResponse,
      stop: () => (stopping ??= unwind()),
    };
  } catch (err) {
    log.fatal({ err }, 'operator failed to start');
    await unwind();
    throw err;
  }
}

interface StatusServer {
  close(): Promise<void>;
}

/** The operator API (the agent API's conventions): status, and the cluster's nodes (delete = the node left). */
async function serveStatus(socket: string, status: () => Promise<unknown>, store: Store, log: Logger, ipam: OperatorConfig['ipam'], extra: (api: ApiServer) => void = () => {}): Promise<StatusServer> {
  const api = new ApiServer(log);
  api.route('GET', '/v1/status', () => status());
  api.route('GET', '/v1/nodes', async () => (await store.list<NodeSpec>('Node')).items.map((r): OperatorNodeView => ({ ...r.value, revision: r.revision })));
  api.route('DELETE', '/v1/nodes/{name}', async (req) => {
    const name = req.params['name']!;
    if (!(await store.delete('Node', name))) throw new HttpError(404, `Node "${name}" not found`, 'TENDRIL_ERR_NOT_FOUND');
    // Its liveness lease goes with it (src/agent/node-lease.ts).
    await store.delete('NodeLease', name);
    return { deleted: name } satisfies NodeDeleteResult;
  });
  registerResourceRoutes(api, store);
  registerServiceRoutes(api, store);
  registerEgressRoutes(api, store);
  registerNodeCidrRoutes(api, store, () => ipam);
  extra(api);
  // A stale socket file from a crash is removed; a live one belongs to another operator and is left alone.
  await api.listen(socket).catch((err: unknown) => {
    if (err instanceof SocketClaimError) throw new OperatorError('TENDRIL_ERR_INVALID_CONFIG', `Cannot listen on --api-socket "${socket}": ${err.problem === 'in-use' ? 'another process is serving there' : 'the path is not a socket'}`);
    throw err;
  });
  return { close: () => api.close() };
}

