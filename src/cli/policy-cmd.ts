// Security views of one node (cilium-dbg style): identities, the ipcache by source, policies, the endpoint policy
// map, conntrack and drop metrics.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import { resolveSocket } from './node-cmd.js';
import { table } from './table.js';
import type { CtEntry, CtFlushResult, DropMetric, EndpointPolicyView, IdentityView, IpView, PolicyDeleteResult, PolicyImportResult, PolicyListView } from '../agent/index.js';
import { describeEntry } from '../policy/index.js';

function client(cmd: Command): ApiClient {
  return new ApiClient(resolveSocket(cmd.optsWithGlobals()));
}

function out(text: string): void {
  process.stdout.write(text);
}

function json(v: unknown): void {
  out(JSON.stringify(v, null, 2) + '\n');
}

export function formatIdentities(rows: IdentityView[]): string {
  return table(['ID', 'LABELS'], rows.map((r) => [String(r.id), r.labels.length ? r.labels : ['(none)']]));
}

export function formatIpList(rows: IpView[]): string {
  return table(['IP', 'IDENTITY', 'SOURCE', 'HOST'], rows.map((r) => [r.prefix, String(r.identity), r.source, r.tunnelEndpoint && r.tunnelEndpoint !== '0.0.0.0' ? r.tunnelEndpoint : '']));
}

export function formatPolicyEntries(view: EndpointPolicyView): string {
  const head =
    `Endpoint ${view.endpoint} (identity ${view.identity}): ingress ${view.ingress ? 'enforced' : 'not enforced (everything allowed)'}, ` +
    `egress ${view.egress ? 'enforced' : 'not enforced (everything allowed)'}\n`;
  const rows = view.entries.map((e) => [
    e.deny ? 'Deny' : 'Allow',
    e.direction === 'ingress' ? 'Ingress' : 'Egress',
    String(e.identity),
    e.labels.length ? e.labels : ['(unknown identity)'],
    describeEntry(e).port,
    String(e.bytes),
    String(e.packets),
    e.derivedFrom.length ? e.derivedFrom : ['-'],
  ]);
  return head + table(['POLICY', 'DIRECTION', 'IDENTITY', 'LABELS (source:key[=value])', 'PORT/PROTO', 'BYTES', 'PACKETS', 'DERIVED FROM'], rows);
}

/** One line per entry, as `cilium-dbg bpf ct list global` prints them. */
export function formatCt(rows: CtEntry[]): string {
  return rows
    .map(
      (r) =>
        `${r.proto} ${r.direction === 'out' ? 'OUT' : 'IN'} ${r.src}:${r.sport} -> ${r.dst}:${r.dport} expires=${r.expires} ` +
        `Packets=${r.packets} Bytes=${r.bytes} RxFlagsSeen=0x${r.rxFlagsSeen.toString(16).padStart(2, '0')} ` +
        `TxFlagsSeen=0x${r.txFlagsSeen.toString(16).padStart(2, '0')} Flags=${r.flags.join(',') || '0'} SourceSecurityID=${r.srcIdentity}\n`,
    )
    .join('');
}

export function formatMetrics(rows: DropMetric[]): string {
  return table(['REASON', 'DIRECTION', 'PACKETS', 'BYTES', 'LINE', 'FILE'], rows.map((r) => [r.description, r.direction.toUpperCase(), String(r.packets), String(r.bytes), '-', '-']));
}

/** Marks a cluster-scoped policy in the NAMESPACE column (kubectl prints none; a blank cell reads as a gap). */
export const CLUSTERWIDE = '<clusterwide>';

/** `policy get -o table`: one row per policy, clusterwide ones marked in the NAMESPACE column. */
export function formatPolicyTable(ps: ReadonlyArray<Pick<PolicyListView['policies'][number], 'namespace' | 'name' | 'kind' | 'source'>>): string {
  return table(['NAMESPACE', 'NAME', 'KIND', 'SOURCE'], ps.map((p) => [p.namespace === '' ? CLUSTERWIDE : p.namespace, p.name, p.kind, p.source]));
}

export function registerPolicyViews(program: Command): void {
  const identity = program.command('identity').description('security identities (label set -> number)');
  identity
    .command('list')
    .description('every identity this node knows: reserved, cluster-wide, node-local CIDR ones')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<IdentityView[]>('/v1/identity');
      if (o.output === 'json') return json(rows);
      out(formatIdentities(rows));
    });
  identity
    .command('get')
    .argument('<id>')
    .option('-o, --output <fmt>', 'json')
    .action(async (id: string, o: { output?: string }, cmd: Command) => {
      const row = await client(cmd).get<IdentityView>(`/v1/identity/${encodeURIComponent(id)}`);
      if (o.output === 'json') return json(row);
      out(formatIdentities([row]));
    });

  program
    .command('ip')
    .description('IP addresses and prefixes with their identities (the ipcache)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<IpView[]>('/v1/ip');
      if (o.output === 'json') return json(rows);
      out(formatIpList(rows));
    });

  const policy = program.command('policy').description('network policies of this node (cluster-wide and imported)');
  policy
    .command('get')
    .description('policies in force on this node')
    .argument('[name]', 'only this policy (NAME or NAMESPACE/NAME)')
    .option('-o, --output <fmt>', 'json (the default is YAML-like JSON documents) or table')
    .action(async (name: string | undefined, o: { output?: string }, cmd: Command) => {
      const r = await client(cmd).get<PolicyListView>('/v1/policy');
      const ps = name ? r.policies.filter((p) => p.key === name || `${p.namespace}/${p.name}` === name || p.name === name) : r.policies;
      if (name && ps.length === 0) throw new Error(`Policy "${name}" not found on this node`);
      if (o.output === 'table') {
        out(formatPolicyTable(ps));
        out(`Enforcement mode: ${r.mode}\n`);
        return;
      }
      json(ps.map((p) => p.document));
    });
  policy
    .command('import')
    .description('import policies from YAML or JSON files (all or nothing; replaces same-named ones)')
    .argument('<files...>')
    .action(async (files: string[], _o: unknown, cmd: Command) => {
      const c = client(cmd);
      // Every file is read and sent together: one invalid document rejects them all.
      const texts = files.map((f) => {
        try {
          return fs.readFileSync(f, 'utf8');
        } catch (err) {
          throw new Error(`Cannot read policy file "${f}": ${(err as Error).message}`);
        }
      });
      const origin = files.map((f) => path.basename(f)).join(', ');
      const r = await c.request<PolicyImportResult>('PUT', '/v1/policy', {
        text: texts.join('\n---\n'),
        origin,
      });
      out(`Imported ${r.imported.join(', ')}; ${r.regeneration.endpoints} endpoint(s) regenerated in ${r.regeneration.ms.toFixed(1)} ms\n`);
    });
  policy
    .command('delete')
    .description('delete an imported policy (NAME or NAMESPACE/NAME)')
    .argument('<name>')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const r = await client(cmd).request<PolicyDeleteResult>('DELETE', `/v1/policy/${encodeURIComponent(name)}`);
      out(`Deleted ${r.deleted.join(', ')}\n`);
    });

  const bpf = program.commands.find((c) => c.name() === 'bpf') ?? program.command('bpf');
  bpf
    .command('policy')
    .description('the policy map of an endpoint (tendril_policy)')
    .command('get')
    .argument('<endpoint>', 'endpoint ID, or container-id:…, ipv4:…, pod-name:NS/NAME')
    .option('-o, --output <fmt>', 'json')
    .action(async (ep: string, o: { output?: string }, cmd: Command) => {
      const v = await client(cmd).get<EndpointPolicyView>(
        `/v1/endpoint/${encodeURIComponent(ep)}/policy`,
      );
      if (o.output === 'json') return json(v);
      out(formatPolicyEntries(v));
    });
  const ct = bpf.command('ct').description('connection tracking tables (tendril_ct4, tendril_ct_any4)');
  ct.command('list')
    .argument('<table>', 'global (the only table)')
    .option('-o, --output <fmt>', 'json')
    .action(async (t: string, o: { output?: string }, cmd: Command) => {
      checkCtTable(t);
      const rows = await client(cmd).get<CtEntry[]>('/v1/map/ct');
      if (o.output === 'json') return json(rows);
      out(formatCt(rows));
    });
  ct.command('flush')
    .argument('<table>', 'global (the only table)')
    .action(async (t: string, _o: unknown, cmd: Command) => {
      checkCtTable(t);
      const r = await client(cmd).request<CtFlushResult>('DELETE', '/v1/map/ct');
      out(`Flushed ${r.deleted} entries from the global conntrack tables\n`);
    });
  bpf
    .command('metrics')
    .description('datapath drop counters by reason and direction (tendril_metrics)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<DropMetric[]>('/v1/map/metrics');
      if (o.output === 'json') return json(rows);
      out(formatMetrics(rows));
    });
}

function checkCtTable(t: string): void {
  if (t !== 'global') throw new Error(`Unknown conntrack table "${t}": Tendril has one per node, "global" (endpoint-local tables do not exist)`);
}
