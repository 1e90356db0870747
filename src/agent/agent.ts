// The agent: composition root of one node. Wires IPAM, datapath, endpoints, the CNI handler and the API by hand.
import fs from 'node:fs';
import path from 'node:path';
import { NodeDatapath, HOST_DEV } from '../datapath/index.js';
import { ensureNamedNetns, interfaceIndex } from '../datapath/index.js';
import { CniHandler, type CniBackend } from '../cni/index.js';
import { createPodInterface, removePodInterface } from '../cni/index.js';
import { ApiServer, HttpError, withStatus } from './api.js';
import type { AgentConfig } from './config.js';
import { EndpointManager, type Endpoint } from './endpoints.js';
import { AgentError } from './errors.js';
import { IDENTITY_HEALTH, placeholderIdentity, securityLabels } from './identity.js';
import { NodeIpam } from './ipam.js';
import type { Logger } from '../util/log.js';

export const VERSION = '0.1.0';
export const CNI_CONF_NAME = '05-tendril.conflist';
const HEALTH_IF = 'lxc_health';

export class Agent {
  readonly cfg: AgentConfig;
  private readonly log: Logger;
  private ipam!: NodeIpam;
  private dp!: NodeDatapath;
  private endpoints!: EndpointManager;
  private api: ApiServer | undefined;
  private routerIP = '';
  private healthIP = '';
  private cniConfPath: string | undefined;
  private readonly startedAt = Date.now();

  constructor(cfg: AgentConfig, log: Logger) {
    this.cfg = cfg;
    this.log = log;
  }

  async start(): Promise<void> {
    const { cfg } = this;
    fs.mkdirSync(cfg.stateDir, { recursive: true, mode: 0o700 });
    this.ipam = new NodeIpam(cfg.podCidr, path.join(cfg.stateDir, 'ipam.json'));
    this.routerIP = this.ipam.findByOwner('router') ?? this.ipam.allocateNext('router');
    this.healthIP = this.ipam.findByOwner('health') ?? this.ipam.allocateNext('health');

    this.dp = new NodeDatapath({
      podCidr: cfg.podCidr,
      routerIP: this.routerIP,
      bpfRoot: cfg.bpfRoot,
      objDir: cfg.objDir,
      mtu: cfg.mtu,
      ...(cfg.nodeIP ? { nodeIP: cfg.nodeIP } : {}),
    });
    this.dp.start();
    this.log.info({ router: this.routerIP, attach: this.dp.mode, bpfRoot: cfg.bpfRoot }, 'datapath loaded');

    this.endpoints = new EndpointManager(this.dp, path.join(cfg.stateDir, 'endpoints.json'), this.log.child({ subsys: 'endpoint' }));
    for (const ep of this.endpoints.restore(interfaceIndex)) {
      if (this.ipam.ownerOf(ep.ip) !== undefined && ep.kind === 'pod') this.ipam.release(ep.ip);
    }
    await this.ensureHealthEndpoint();

    const api = new ApiServer(this.log.child({ subsys: 'api' }));
    this.routes(api, new CniHandler(this.cniBackend(), this.log.child({ subsys: 'cni' })));
    await api.listen(cfg.socket);
    this.api = api;
    this.writeCniConfig();
    this.log.info({ socket: cfg.socket, node: cfg.nodeName }, 'agent ready');
  }

  async stop(): Promise<void> {
    await this.api?.close();
    this.dp?.stop();
  }

  private async ensureHealthEndpoint(): Promise<void> {
    const existing = this.endpoints.list().find((e) => e.kind === 'health');
    if (existing) return;
    const netnsPath = ensureNamedNetns(this.cfg.healthNetns);
    // A health interface left by a crashed run without an endpoint record: start clean.
    await removePodInterface(netnsPath, 'eth0', HEALTH_IF);
    const wired = await createPodInterface({
      netnsPath,
      hostIfName: HEALTH_IF,
      podIfName: 'eth0',
      ip: this.healthIP,
      routerIP: this.routerIP,
      mtu: this.cfg.mtu,
    });
    this.endpoints.create({
      kind: 'health',
      containerId: `health:${this.cfg.nodeName}`,
      ifname: 'eth0',
      hostIfName: HEALTH_IF,
      hostIfindex: wired.hostIfindex,
      hostMac: wired.hostMac,
      podMac: wired.podMac,
      ip: this.healthIP,
      netnsPath,
      namespace: '',
      podName: '',
      labels: {},
      securityLabels: ['reserved:health'],
      identity: IDENTITY_HEALTH,
    });
  }

  private cniBackend(): CniBackend {
    return {
      status: () => ({ ready: this.api !== undefined }),
      netConfig: () => ({ routerIP: this.routerIP, mtu: this.cfg.mtu }),
      allocateIP: async (owner) => this.ipam.allocateNext(owner),
      releaseIP: async (ip) => {
        this.ipam.release(ip);
      },
      createEndpoint: async (r) => {
        const namespace = r.namespace ?? 'default';
        const labels = r.labels ?? {};
        const sec = securityLabels(namespace, labels);
        const ep = this.endpoints.create({
          kind: 'pod',
          containerId: r.containerId,
          ifname: r.ifname,
          hostIfName: r.hostIfName,
          hostIfindex: r.hostIfindex,
          hostMac: r.hostMac,
          podMac: r.podMac,
          ip: r.ip,
          netnsPath: r.netnsPath,
          namespace,
          podName: r.podName ?? r.containerId.slice(0, 12),
          labels,
          securityLabels: sec,
          identity: placeholderIdentity(sec),
        });
        return { id: ep.id };
      },
      findEndpoint: (containerId, ifname) => this.endpoints.findByContainer(containerId, ifname),
      deleteEndpoint: async (id) => {
        if (this.endpoints.get(id)) this.endpoints.delete(id);
      },
      listEndpoints: () => this.endpoints.list().filter((e) => e.kind === 'pod'),
    };
  }

  private routes(api: ApiServer, cni: CniHandler): void {
    api.route('GET', '/v1/healthz', () => this.status());
    api.route('GET', '/v1/config', () => this.configView());
    api.route('POST', '/v1/ipam', (req) => {
      const owner = req.query.get('owner') ?? '';
      if (!owner) throw new HttpError(400, 'Missing query parameter "owner" (e.g. ?owner=default/curl-pod)', 'TENDRIL_ERR_INVALID_REQUEST');
      const ip = this.ipam.allocateNext(owner);
      return withStatus(201, { ipv4: { ip, cidrs: [this.cfg.podCidr], gateway: this.routerIP }, 'host-addressing': this.hostAddressing() });
    });
    api.route('POST', '/v1/ipam/{ip}', (req) => {
      const owner = req.query.get('owner') ?? '';
      if (!owner) throw new HttpError(400, 'Missing query parameter "owner"', 'TENDRIL_ERR_INVALID_REQUEST');
      this.ipam.allocate(req.params['ip']!, owner);
      return withStatus(201, { ipv4: { ip: req.params['ip'], cidrs: [this.cfg.podCidr], gateway: this.routerIP } });
    });
    api.route('DELETE', '/v1/ipam/{ip}', (req) => {
      const ip = req.params['ip']!;
      const owner = this.ipam.ownerOf(ip);
      if (owner === undefined) throw new HttpError(404, `IP ${ip} is not allocated`, 'TENDRIL_ERR_IPAM_NOT_FOUND');
      if (owner === 'router' || owner === 'health') throw new HttpError(409, `IP ${ip} belongs to the node (${owner}) and cannot be released`, 'TENDRIL_ERR_IPAM_CONFLICT');
      if (this.endpoints.resolve(`ipv4:${ip}`)) throw new HttpError(409, `IP ${ip} is in use by an endpoint; delete the endpoint first`, 'TENDRIL_ERR_IPAM_CONFLICT');
      this.ipam.release(ip);
      return { released: ip };
    });
    api.route('GET', '/v1/endpoint', () => this.endpoints.list().map((e) => this.endpointView(e)));
    api.route('GET', '/v1/endpoint/{id}', (req) => this.endpointView(this.mustResolve(req.params['id']!)));
    api.route('PUT', '/v1/endpoint/{id}', (req) => {
      const id = Number(req.params['id']);
      if (!Number.isInteger(id) || id < 1 || id > 4095) throw new HttpError(400, `Invalid endpoint ID "${req.params['id']}": expected 1-4095`, 'TENDRIL_ERR_INVALID_REQUEST');
      const ep = this.endpoints.create({ ...this.endpointFromChangeRequest(req.json()), id });
      return withStatus(201, this.endpointView(ep));
    });
    api.route('DELETE', '/v1/endpoint/{id}', (req) => {
      const ep = this.mustResolve(req.params['id']!);
      if (ep.kind === 'health') throw new HttpError(409, `Endpoint ${ep.id} is the node's health endpoint and cannot be deleted`, 'TENDRIL_ERR_ENDPOINT_CONFLICT');
      this.endpoints.delete(ep.id);
      return { deleted: ep.id };
    });
    api.route('GET', '/v1/map/tendril_lxc', () => this.dp.dumpEndpoints());
    api.route('GET', '/v1/datapath/attachments', () => this.dp.attachments());
    api.route('POST', '/v1/cni', async (req) => {
      const out = await cni.handleRaw(flattenHeaders(req.headers), req.body);
      return { raw: true, status: 200, headers: { 'x-cni-exit-code': String(out.exitCode) }, body: out.stdout };
    });
  }

  private mustResolve(ref: string): Endpoint {
    const ep = this.endpoints.resolve(ref);
    if (!ep) throw new AgentError('TENDRIL_ERR_ENDPOINT_NOT_FOUND', `Endpoint "${ref}" not found`);
    return ep;
  }

  /** Validates a Cilium-style EndpointChangeRequest for PUT /v1/endpoint/{id}. */
  private endpointFromChangeRequest(body: unknown): Omit<Endpoint, 'id' | 'state' | 'created'> {
    if (typeof body !== 'object' || body === null) throw new HttpError(400, 'Endpoint request must be a JSON object', 'TENDRIL_ERR_INVALID_REQUEST');
    const b = body as Record<string, unknown>;
    const str = (k: string, required = true): string => {
      const v = b[k];
      if (typeof v === 'string' && v !== '') return v;
      if (!required && v === undefined) return '';
      throw new HttpError(400, `Invalid endpoint request: "${k}" must be a non-empty string`, 'TENDRIL_ERR_INVALID_REQUEST');
    };
    const addressing = b['addressing'] as { ipv4?: unknown } | undefined;
    const ip = typeof addressing?.ipv4 === 'string' ? addressing.ipv4 : '';
    if (!ip) throw new HttpError(400, 'Invalid endpoint request: "addressing.ipv4" is required', 'TENDRIL_ERR_INVALID_REQUEST');
    if (this.ipam.ownerOf(ip) === undefined) throw new HttpError(400, `Invalid endpoint request: ${ip} is not allocated by this node's IPAM (POST /v1/ipam first)`, 'TENDRIL_ERR_INVALID_REQUEST');
    const hostIfName = str('interface-name');
    const hostIfindex = interfaceIndex(hostIfName);
    if (hostIfindex === undefined) throw new HttpError(400, `Invalid endpoint request: interface "${hostIfName}" does not exist on this node`, 'TENDRIL_ERR_INVALID_REQUEST');
    const labelsIn = b['labels'];
    const labels: Record<string, string> = {};
    if (labelsIn !== undefined) {
      if (typeof labelsIn !== 'object' || labelsIn === null || Array.isArray(labelsIn)) throw new HttpError(400, 'Invalid endpoint request: "labels" must be an object of strings', 'TENDRIL_ERR_INVALID_REQUEST');
      for (const [k, v] of Object.entries(labelsIn)) {
        if (typeof v !== 'string') throw new HttpError(400, `Invalid endpoint request: label "${k}" must be a string`, 'TENDRIL_ERR_INVALID_REQUEST');
        labels[k] = v;
      }
    }
    const namespace = str('k8s-namespace', false) || 'default';
    const sec = securityLabels(namespace, labels);
    return {
      kind: 'pod',
      containerId: str('container-id'),
      ifname: str('container-interface-name', false) || 'eth0',
      hostIfName,
      hostIfindex,
      hostMac: str('host-mac'),
      podMac: str('mac'),
      ip,
      netnsPath: str('container-netns-path', false),
      namespace,
      podName: str('k8s-pod-name', false),
      labels,
      securityLabels: sec,
      identity: placeholderIdentity(sec),
    };
  }

  private hostAddressing(): unknown {
    return { ipv4: { enabled: true, ip: this.routerIP, 'alloc-range': this.cfg.podCidr } };
  }

  private configView(): unknown {
    return {
      'node-name': this.cfg.nodeName,
      'pod-cidr': this.cfg.podCidr,
      'router-ip': this.routerIP,
      'health-ip': this.healthIP,
      'node-ip': this.cfg.nodeIP ?? null,
      mtu: this.cfg.mtu,
      'device-mode': 'veth',
      'attach-mode': this.dp.mode,
      routing: { mode: 'local', note: 'same-node forwarding only; cross-node routing arrives with the multi-node issue' },
      'host-device': this.dp.hostDevice,
      'bpf-root': this.cfg.bpfRoot,
      'cni-config': this.cniConfPath ?? null,
      'state-dir': this.cfg.stateDir,
    };
  }

  private status(): unknown {
    const owners = new Map(this.endpoints.list().map((e) => [e.ip, e]));
    return {
      tendril: { state: 'Ok', version: VERSION, node: this.cfg.nodeName, 'uptime-seconds': Math.round((Date.now() - this.startedAt) / 1000) },
      'cni-config': this.cniConfPath ?? null,
      ipam: {
        'pod-cidr': this.cfg.podCidr,
        used: this.ipam.used,
        capacity: this.ipam.capacity,
        allocations: this.ipam.list().map((a) => ({ ...a, endpoint: owners.get(a.ip)?.id ?? null })),
      },
      'attach-mode': this.dp.mode,
      'device-mode': 'veth',
      routing: 'local',
      endpoints: this.endpoints.list().length,
      health: { ip: this.healthIP, endpoint: this.endpoints.list().find((e) => e.kind === 'health')?.id ?? null },
    };
  }

  private endpointView(ep: Endpoint): unknown {
    return {
      id: ep.id,
      status: {
        state: ep.state,
        'external-identifiers': {
          'container-id': ep.containerId,
          'k8s-namespace': ep.namespace,
          'k8s-pod-name': ep.podName,
          'pod-name': ep.podName ? `${ep.namespace}/${ep.podName}` : '',
        },
        identity: { id: ep.identity, labels: ep.securityLabels, note: ep.kind === 'health' ? 'reserved' : 'placeholder until cluster-wide identities (#4)' },
        labels: { 'security-relevant': ep.securityLabels },
        networking: {
          addressing: [{ ipv4: ep.ip, 'ipv4-pool-name': 'default' }],
          'container-interface-name': ep.ifname,
          'container-netns-path': ep.netnsPath,
          'host-mac': ep.hostMac,
          'interface-index': ep.hostIfindex,
          'interface-name': ep.hostIfName,
          mac: ep.podMac,
        },
        policy: { 'policy-enabled': 'none' },
        created: ep.created,
      },
    };
  }

  private writeCniConfig(): void {
    const conf = {
      cniVersion: '1.0.0',
      name: 'tendril',
      plugins: [{ type: 'tendril-cni', 'agent-socket': this.cfg.socket }],
    };
    fs.mkdirSync(this.cfg.cniConfDir, { recursive: true });
    const file = path.join(this.cfg.cniConfDir, CNI_CONF_NAME);
    const tmp = `${file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(conf, null, 2) + '\n');
    fs.renameSync(tmp, file);
    this.cniConfPath = file;
  }
}

function flattenHeaders(headers: Record<string, string | string[] | undefined>): Record<string, string | undefined> {
  const flat: Record<string, string | undefined> = {};
  for (const [k, v] of Object.entries(headers)) flat[k] = Array.isArray(v) ? v.join(',') : v;
  return flat;
}

export { HOST_DEV };
