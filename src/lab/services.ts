// `lab service add|list|del`: services through the operator (which allocates ClusterIPs and node ports), then a
// wait until every running node's service maps hold the change.
import { MANAGED_BY_LAB, MANAGED_BY_LABEL, SLICE_SERVICE_NAME_LABEL, type EndpointSliceSpec, type ServiceListEntry, type ServicePort, type ServiceSpec } from '../lb/index.js';
import { LabError } from './errors.js';
import { loadLab } from './lab.js';
import { operator, untilEachNode, type ChangeOptions } from './security.js';

/** `--port PORT[:TARGET][/PROTO][,NAME]`: TARGET a number or a container port name (e.g. 80:http/TCP,web). */
export function parseServicePort(text: string): ServicePort {
  const m = /^(\d{1,5})(?::([a-z0-9-]+|\d{1,5}))?(?:\/(TCP|UDP))?(?:,([a-z0-9-]+))?$/i.exec(text.trim());
  if (!m) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --port "${text}": expected PORT[:TARGETPORT][/TCP|UDP][,NAME], e.g. 80:8080/TCP,http`);
  const target = m[2] === undefined ? Number(m[1]) : /^\d+$/.test(m[2]) ? Number(m[2]) : m[2].toLowerCase();
  const p: ServicePort = { port: Number(m[1]), targetPort: target, protocol: (m[3]?.toUpperCase() ?? 'TCP') as ServicePort['protocol'] };
  if (m[4] !== undefined) p.name = m[4].toLowerCase();
  return p;
}

export interface LabServiceAdd {
  namespace: string;
  selector: Record<string, string>;
  ports: ServicePort[];
  type: string;
  clusterIP?: string;
  externalTrafficPolicy?: string;
  internalTrafficPolicy?: string;
  sessionAffinity?: string;
  sessionAffinityTimeoutSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  loadBalancerSourceRanges?: string[];
}

type Stored = ServiceSpec & { revision: number };

function frontends(s: ServiceSpec): string[] {
  return s.ports.map((p) => `${s.clusterIP}:${p.port}/${p.protocol}`);
}

export async function labServiceAdd(lab: string, name: string, o: LabServiceAdd, c: ChangeOptions = {}): Promise<Stored> {
  const st = loadLab(lab);
  const service: Record<string, unknown> = { namespace: o.namespace, name, type: o.type, ports: o.ports, selector: o.selector };
  for (const k of ['clusterIP', 'externalTrafficPolicy', 'internalTrafficPolicy', 'sessionAffinity', 'sessionAffinityTimeoutSeconds', 'labels', 'annotations', 'loadBalancerSourceRanges'] as const) {
    if (o[k] !== undefined) service[k] = o[k];
  }
  const s = await operator(st).request<Stored>('PUT', '/v1/services', { service });
  const want = frontends(s);
  await untilEachNode(st.nodes, `Service ${s.namespace}/${s.name} (${s.clusterIP}) stored in the cluster store`, 'load it', async (a) => {
    const list = await a.get<ServiceListEntry[]>('/v1/service', 2000);
    return want.every((f) => list.some((e) => e.frontend === f && e.service === `${s.namespace}/${s.name}`));
  }, c);
  return s;
}

export async function labServiceList(lab: string): Promise<Stored[]> {
  return operator(loadLab(lab)).get<Stored[]>('/v1/services');
}

/** `lab service del NS/NAME` (or NAME in namespace default). */
export async function labServiceDel(lab: string, ref: string, c: ChangeOptions = {}): Promise<string> {
  const st = loadLab(lab);
  const [namespace, name] = ref.includes('/') ? ref.split('/', 2) : ['default', ref];
  const before = (await labServiceList(lab)).find((s) => s.namespace === namespace && s.name === name);
  await operator(st).request('DELETE', `/v1/services/${encodeURIComponent(namespace!)}/${encodeURIComponent(name!)}`);
  const gone = before ? frontends(before) : [];
  await untilEachNode(st.nodes, `Service ${namespace}/${name} deleted from the cluster store`, 'remove it', async (a) => {
    const list = await a.get<ServiceListEntry[]>('/v1/service', 2000);
    return !list.some((e) => gone.includes(e.frontend));
  }, c);
  return `${namespace}/${name}`;
}

/** `--backend IP:PORT`: an explicit backend of a service without a selector (any address, also outside the pods). */
export function parseBackend(text: string): { ip: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535 || m[1]!.split('.').some((o) => Number(o) > 255)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --backend "${text}": expected IPv4:PORT, e.g. 192.168.10.200:8080`);
  return { ip: m[1]!, port };
}

type StoredSlice = EndpointSliceSpec & { revision: number };

/**
 * `lab service endpoints NS/NAME --backend IP:PORT ...`: the explicit backends of a service without a selector, as
 * EndpointSlices (one per backend port, the service's port `portName`), replacing the ones this command wrote
 * before; no backend: none. Waits until every node's maps hold them.
 */
export async function labServiceEndpoints(lab: string, ref: string, backends: Array<{ ip: string; port: number }>, o: { portName?: string } = {}, c: ChangeOptions = {}): Promise<StoredSlice[]> {
  const st = loadLab(lab);
  const [namespace, name] = ref.includes('/') ? ref.split('/', 2) as [string, string] : ['default', ref];
  const svc = (await labServiceList(lab)).find((s) => s.namespace === namespace && s.name === name);
  if (!svc) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Service "${namespace}/${name}" not found: add it first (lab service add ${name} --namespace ${namespace} --port ... without --selector)`);
  if (Object.keys(svc.selector).length > 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Service "${namespace}/${name}" has a selector: its backends are the pods it selects; explicit backends are for a service without one`);
  const sp = o.portName === undefined ? (svc.ports.length === 1 ? svc.ports[0] : undefined) : svc.ports.find((p) => p.name === o.portName);
  if (!sp) throw new LabError('TENDRIL_ERR_LAB_INVALID', o.portName === undefined ? `Service "${namespace}/${name}" has ${svc.ports.length} ports: say which with --port-name` : `Service "${namespace}/${name}" has no port named "${o.portName}"`);
  const api = operator(st);
  const byPort = new Map<number, string[]>();
  for (const b of backends) byPort.set(b.port, [...new Set([...(byPort.get(b.port) ?? []), b.ip])]);
  const prefix = `${name}-lab-${sp.name ?? 'port'}-`;
  const written: StoredSlice[] = [];
  for (const [port, ips] of byPort) {
    const endpointSlice: EndpointSliceSpec = {
      namespace,
      name: `${prefix}${port}`,
      labels: { [SLICE_SERVICE_NAME_LABEL]: name, [MANAGED_BY_LABEL]: MANAGED_BY_LAB },
      addressType: 'IPv4',
      endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true } })),
      ports: [{ ...(sp.name !== undefined ? { name: sp.name } : {}), protocol: sp.protocol, port }],
    };
    written.push(await api.request<StoredSlice>('PUT', '/v1/endpointslices', { endpointSlice }));
  }
  const keep = new Set(written.map((s) => s.name));
  for (const s of await api.get<StoredSlice[]>('/v1/endpointslices')) {
    if (s.namespace === namespace && s.name.startsWith(prefix) && s.labels[MANAGED_BY_LABEL] === MANAGED_BY_LAB && !keep.has(s.name)) {
      await api.request('DELETE', `/v1/endpointslices/${encodeURIComponent(namespace)}/${encodeURIComponent(s.name)}`);
    }
  }
  const frontend = `${svc.clusterIP}:${sp.port}/${sp.protocol}`;
  const want = backends.map((b) => `${b.ip}:${b.port}/${sp.protocol}`).sort();
  await untilEachNode(st.nodes, `Backends of service ${namespace}/${name} stored in the cluster store`, 'load them', async (a) => {
    const list = await a.get<ServiceListEntry[]>('/v1/service', 2000);
    const e = list.find((x) => x.frontend === frontend);
    return e !== undefined && JSON.stringify([...new Set(e.backends)].sort()) === JSON.stringify([...new Set(want)]);
  }, c);
  return written;
}
