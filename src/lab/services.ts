// `lab service add|list|del`: services through the operator (which allocates ClusterIPs and node ports), then a
// wait until every running node's service maps hold the change.
import type { ServiceListEntry, ServicePort, ServiceSpec } from '../lb/index.js';
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
