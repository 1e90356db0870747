// `lab egress-gateway apply|list|del`: egress gateway policies through the operator (which picks the gateway and the
// egress IP), then a wait until every running node's map holds the change.
import fs from 'node:fs';
import { parseAllDocuments } from 'yaml';
import type { EgressGatewayPolicyResource, EgressStatusView } from '../egress/index.js';
import { parseCidr, formatIPv4, cidrSize } from '../util/ip.js';
import { LabError } from './errors.js';
import { loadLab, type LabState } from './lab.js';
import { operator, untilEachNode, type ChangeOptions } from './security.js';

export type LabEgressPolicy = EgressGatewayPolicyResource & { revision: number };

const STATUS_WAIT_MS = 20_000;

/** The lab operator's --egress-ip-pool: the last /28 of the underlay (192.168.10.240/28 by default). */
export function labEgressPool(underlayCidr: string): string {
  const c = parseCidr(underlayCidr);
  return `${formatIPv4((c.base + cidrSize(c) - 16) >>> 0)}/28`;
}

function readDocs(file: string): unknown[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot read egress gateway policy file "${file}": ${(err as Error).message}`);
  }
  const docs = parseAllDocuments(text);
  const out: unknown[] = [];
  for (const d of docs) {
    if (d.errors.length > 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot parse "${file}": ${d.errors[0]!.message}`);
    const v: unknown = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  if (out.length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `"${file}" holds no TendrilEgressGatewayPolicy`);
  return out;
}

async function waitApplied(st: LabState, name: string, gone: boolean, c: ChangeOptions): Promise<void> {
  let revision = 0;
  if (!gone) {
    const deadline = Date.now() + STATUS_WAIT_MS;
    for (;;) {
      const p = (await labEgressList(st.name)).find((x) => x.spec.name === name);
      if (p && (p.status.gatewayIP !== undefined || p.status.problem !== undefined)) {
        revision = p.revision;
        break;
      }
      if (Date.now() > deadline) throw new LabError('TENDRIL_ERR_LAB_AGENT', `TendrilEgressGatewayPolicy "${name}" is stored, but the operator gave it no status within ${STATUS_WAIT_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await untilEachNode(st.nodes, `TendrilEgressGatewayPolicy "${name}" ${gone ? 'deleted from' : 'stored in'} the cluster store`, gone ? 'remove it' : 'apply it', async (a) => {
    const s = await a.get<EgressStatusView | null>('/v1/egress', 2000);
    if (!s) return false;
    const have = s.applied[name];
    return gone ? have === undefined : have !== undefined && have >= revision;
  }, c);
}

/** Every policy of the file(s), each stored and then waited for (status from the operator, then every node). */
export async function labEgressApply(lab: string, file: string, c: ChangeOptions = {}): Promise<LabEgressPolicy[]> {
  const st = loadLab(lab);
  const docs = readDocs(file);
  const stored: string[] = [];
  for (const d of docs) stored.push((await operator(st).request<LabEgressPolicy>('PUT', '/v1/egress-gateway-policies', { policy: d })).spec.name);
  for (const n of stored) await waitApplied(st, n, false, c);
  const all = await labEgressList(lab);
  return stored.map((n) => all.find((p) => p.spec.name === n)!).filter(Boolean);
}

export async function labEgressList(lab: string): Promise<LabEgressPolicy[]> {
  return operator(loadLab(lab)).get<LabEgressPolicy[]>('/v1/egress-gateway-policies');
}

export async function labEgressDel(lab: string, name: string, c: ChangeOptions = {}): Promise<string> {
  const st = loadLab(lab);
  await operator(st).request('DELETE', `/v1/egress-gateway-policies/${encodeURIComponent(name)}`);
  await waitApplied(st, name, true, c);
  return name;
}
