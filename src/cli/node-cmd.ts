// Views of one node through its agent API: status, endpoint list/get, bpf map dumps (cilium-dbg style).
import fs from 'node:fs';
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import { keyValues, table } from './table.js';
import { DEFAULT_SOCKET, type Attachment, type EndpointInfo, type EndpointView, type IpcacheEntry, type NodeView, type StatusView } from '../agent/index.js';
import { formatKubernetesStatus } from '../k8s/status.js';
import { DEFAULT_LAB, findNode, labExists, listLabs, loadLab } from '../lab/lab.js';
import { formatMasquerading, formatMasqueradingVerbose } from './nat-cmd.js';
import { formatEgressStatus } from './egress-cmd.js';

interface GlobalOpts {
  lab?: string;
  node?: string;
  socket?: string;
}

/** Which agent to talk to: --socket, else the lab node (--lab/--node, or the one running lab), else the default. */
export function resolveSocket(g: GlobalOpts): string {
  if (g.socket) return g.socket;
  if (g.lab || g.node) {
    const st = loadLab(g.lab ?? DEFAULT_LAB);
    return findNode(st, g.node ?? st.nodes[0]!.name).socket;
  }
  if (fs.existsSync(DEFAULT_SOCKET)) return DEFAULT_SOCKET;
  const labs = labExists(DEFAULT_LAB) ? [DEFAULT_LAB] : listLabs();
  if (labs.length === 1) return loadLab(labs[0]).nodes[0]!.socket;
  return DEFAULT_SOCKET;
}

function client(cmd: Command): ApiClient {
  return new ApiClient(resolveSocket(cmd.optsWithGlobals<GlobalOpts>()));
}

function out(text: string): void {
  process.stdout.write(text);
}

function json(v: unknown): void {
  out(JSON.stringify(v, null, 2) + '\n');
}

/** Cilium's status line: True [what is replaced, how]; False without a store (no services to know of). */
function kubeProxyReplacement(k: StatusView['kube-proxy-replacement']): string {
  if (!k) return 'False';
  const how = `${k.algorithm === 'maglev' ? `Maglev (table size: ${k.maglevTableSize})` : 'Random'}`;
  const sock = k.socketLb?.enabled ? `Socket LB: Enabled (cgroup ${k.socketLb.cgroup ?? '-'})` : 'Socket LB: Disabled';
  const where = k.socketLb?.enabled ? 'at the socket in the socket-LB cgroup, per-packet elsewhere' : 'per-packet in the endpoint program';
  return `True   [ClusterIP, NodePort from pods (${where}), ${sock}, Backend Selection: ${how}, ${k.frontends} frontend(s)${k.synced ? '' : ', not synced yet'}${k.lastError ? `, error: ${k.lastError}` : ''}]`;
}

/** Cilium's "Proxy Status" line, for Tendril's node HTTP proxy: port, redirects, request counters. */
export function formatProxyStatus(p: StatusView['proxy']): string {
  if (!p) return 'Disabled (no L7 rule on this node)';
  const st = p.stats;
  const reqs = st ? `; requests ${st.requests} (${st.forwarded} allowed, ${st.denied} denied), ${st.connections} connection(s), ${st.errors} upstream error(s)` : '';
  return `${p.running ? 'OK' : 'Not running (L7 ports fail closed)'}   port ${p.port}, ${p.redirects} redirect(s) active, pid ${p.pid ?? '-'}, ${p.restarts} restart(s)${reqs}`;
}

function formatL2(l: StatusView['l2-announcements']): string {
  if (!l) return 'Disabled';
  return `Ok   ${l.announced}/${l.leases} LoadBalancer IP(s) announced by this node (ARP in BPF, lease ${l.leaseDurationMs / 1000}s)${l.lastError ? `, error: ${l.lastError}` : ''}`;
}

export function formatStatus(s: StatusView, verbose: boolean): string {
  const store = s.store ? `${s.store.ok ? 'Ok' : 'Unreachable'}   ${s.store.description}${s.store.error ? `   (${s.store.error})` : ''}` : 'Disabled';
  const before: Array<[string, string]> = [
    ['KVStore', store],
    ['Kubernetes', formatKubernetesStatus(s.kubernetes)],
    ['CNI Config file', s['cni-config'] ? `successfully wrote CNI configuration file to ${s['cni-config']}` : 'not written yet'],
    ['Tendril', `${s.tendril.state}   ${s.tendril.version}   node ${s.tendril.node}   uptime ${s.tendril['uptime-seconds']}s${s.tendril.message ? `   (${s.tendril.message})` : ''}`],
    ['NodeMonitor', s.monitor ? `Listening for events on ${s.monitor.cpus} CPUs with a 1 MiB ring buffer (${s.monitor.read} read, ${s.monitor.lost} lost)` : 'Disabled'],
    ['Cilium health daemon', s.health.endpoint !== null ? `Ok   (endpoint ${s.health.endpoint}, ${s.health.ip})` : 'Not ready'],
    ['IPAM', s.ipam ? `IPv4: ${s.ipam.used}/${s.ipam.capacity} allocated from ${ipamCidrs(s)},` : 'IPv4: waiting for a pod CIDR'],
  ];
  const routing = s.routing.mode === 'tunnel' ? 'Network: Tunnel [vxlan]   Host: BPF' : `Network: Native   Host: BPF   (device ${s.routing['native-device']})`;
  const after: Array<[string, string]> = [
    ['Routing', routing],
    ['Attach Mode', s['attach-mode'] === null ? '-' : s['attach-mode'] === 'tcx' ? 'TCX' : 'TC (clsact)'],
    ['Device Mode', s['device-mode']],
    ['Masquerading', formatMasquerading(s.masquerading)],
    ['KubeProxyReplacement', kubeProxyReplacement(s['kube-proxy-replacement'])],
    ['L2 Announcements', formatL2(s['l2-announcements'])],
    ['Egress Gateway', formatEgressStatus(s.egressGateway, s['node-lease'] ?? null)],
    ['Cluster', `${s.nodes} node(s)`],
    ['Hubble', s.hubble ? `${s.hubble.serving === false ? 'Not serving (agent not ready)' : 'Ok'}   Current/Max Flows: ${s.hubble.flows}/${s.hubble['max-flows']} (${s.hubble['flows-rate'].toFixed(2)} flows/s)   ${s.hubble.socket}` : 'Disabled'],
    ['Endpoints', `${s.endpoints} (incl. health)`],
    ['Proxy Status', formatProxyStatus(s.proxy)],
  ];
  if (s.policy) {
    const r = s.policy['last-regeneration'];
    after.push([
      'Policy',
      `enforcement ${s.policy.mode}, ${s.policy.policies} polic${s.policy.policies === 1 ? 'y' : 'ies'}, ${s.identities ?? 0} cluster identities` +
        (r.at ? `; last regeneration: ${r.endpoints} endpoint(s) in ${r.ms} ms` : ''),
    ]);
  }
  if (s.conntrack) {
    const g = s.conntrack['last-gc'];
    after.push(['Conntrack', `GC every ${s.conntrack['gc-interval-ms'] / 1000} s${g ? `; last pass: ${g.deleted} expired removed, ${g.alive} alive` : ''}`]);
  }
  const width = Math.max(...[...before, ...after].map(([k]) => k.length));
  let text = keyValues(before, width);
  if (verbose && s.ipam) {
    // --ipam multi-pool: per IP pool (the default pool's follower would list every pool's CIDRs as its own).
    for (const p of s.ipam['ip-pools'] ?? []) {
      text += `IPAM pool ${p.pool} (multi-pool, ${p.requested} CIDR(s) requested):\n`;
      text += p.cidrs.map((c) => `  ${c.cidr.padEnd(18)} ${c.used}/${c.capacity} used\n`).join('');
    }
    for (const [name, pool] of Object.entries(s.ipam['ip-pools'] ? {} : (s.ipam.pools ?? {}))) {
      text += `IPAM pool ${name} (${pool.mode}${pool.requested !== null ? `, ${pool.requested} CIDR(s) requested` : ''}, pre-allocate ${pool['pre-allocate']})${pool.waiting ? `: ${pool.waiting}` : ''}:\n`;
      text += pool.cidrs.map((c) => `  ${c.cidr.padEnd(18)} ${c.used}/${c.capacity} used${c.draining ? '   (draining)' : ''}\n`).join('');
    }
    text += 'Allocated addresses:\n' + s.ipam.allocations.map((a) => `  ${a.ip} (${a.owner})\n`).join('');
  }
  text += keyValues(after, width);
  if (verbose) text += formatMasqueradingVerbose(s.masquerading);
  if (verbose && s['cni-timings']?.length) text += formatCniTimings(s['cni-timings']);
  return text;
}

/** status --verbose: where the last CNI calls spent their time, per verb and phase, in the order of the call. */
export function formatCniTimings(views: StatusView['cni-timings']): string {
  const ms = (x: number): string => x.toFixed(2);
  let text = '';
  for (const v of views) {
    text += `CNI ${v.verb} timings (last ${v.calls} call${v.calls === 1 ? '' : 's'}, ms):\n`;
    const rows = [...v.phases.map((p) => [`  ${p.phase}`, ms(p.p50), ms(p.p99), ms(p.max)]), ['  total', ms(v.total.p50), ms(v.total.p99), ms(v.total.max)]];
    text += table(['  PHASE', 'P50', 'P99', 'MAX'], rows);
  }
  return text;
}

/** The node's pod CIDRs as status prints them (every pool's, else the primary). */
function ipamCidrs(s: StatusView): string {
  const all = Object.values(s.ipam?.pools ?? {}).flatMap((p) => p.cidrs.map((c) => c.cidr));
  return all.length > 0 ? all.join(', ') : (s.ipam?.['pod-cidr'] ?? '');
}

export function formatEndpointList(eps: EndpointView[]): string {
  // The pod (namespace/name, as Kubernetes names it) when any endpoint has one: pods a runtime created through CNI_ARGS.
  const pods = eps.some((e) => !!e.status['external-identifiers']?.['pod-name']);
  const rows = eps.map((e) => {
    const row: Array<string | string[]> = [
      String(e.id),
      e.status.policy?.ingress ? 'Enabled' : 'Disabled',
      e.status.policy?.egress ? 'Enabled' : 'Disabled',
      String(e.status.identity.id),
      e.status.identity.labels.length ? e.status.identity.labels : ['(none)'],
      e.status.networking.addressing[0]?.ipv4 ?? '',
      e.status.state,
    ];
    if (pods) row.push(e.status['external-identifiers']?.['pod-name'] || '-');
    return row;
  });
  const head = [
    ['ENDPOINT', 'POLICY (ingress)', 'POLICY (egress)', 'IDENTITY', 'LABELS (source:key[=value])', 'IPv4', 'STATUS'],
    ['', 'ENFORCEMENT', 'ENFORCEMENT', '', '', '', ''],
  ];
  if (pods) {
    head[0]!.push('POD');
    head[1]!.push('');
  }
  return table(head, rows);
}

/** ipcache flag bits as Cilium prints them. */
export function ipcacheFlags(flags: number | string[]): string {
  if (Array.isArray(flags)) return flags.join(',') || '<none>';
  const names = [
    [1, 'hastunnel'],
    [2, 'skiptunnel'],
  ] as const;
  return names.filter(([bit]) => (flags & bit) !== 0).map(([, n]) => n).join(',') || '<none>';
}

export function registerNodeViews(program: Command): void {
  program
    .command('status')
    .description('node status like `cilium-dbg status`')
    .option('--verbose', 'also list each IPAM pool\'s CIDRs (used/total), the allocated addresses and where CNI ADDs and DELs spend their time')
    .option('-o, --output <fmt>', 'json for machine-readable output')
    .action(async (o: { verbose?: boolean; output?: string }, cmd: Command) => {
      const s = await client(cmd).get<StatusView>('/v1/healthz');
      if (o.output === 'json') json(s);
      else out(formatStatus(s, o.verbose === true));
    });

  const ep = program.command('endpoint').description('endpoints of the node');
  ep.command('list')
    .description('list endpoints')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const eps = await client(cmd).get<EndpointView[]>('/v1/endpoint');
      if (o.output === 'json') json(eps);
      else out(formatEndpointList(eps));
    });
  ep.command('get')
    .description('endpoint details as JSON (ID, or container-id:…, ipv4:…, pod-name:NS/NAME)')
    .argument('<id>')
    .option('-o, --output <fmt>', 'json (the default)')
    .action(async (id: string, _o: unknown, cmd: Command) => {
      const e = await client(cmd).get<EndpointView>(`/v1/endpoint/${encodeURIComponent(id)}`);
      json([e]);
    });

  const node = program.command('node').description('nodes of the cluster');
  node
    .command('list')
    .description('nodes as this agent knows them from the cluster store')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const nodes = await client(cmd).get<NodeView[]>('/v1/cluster/nodes');
      if (o.output === 'json') return json(nodes);
      out(table(['Name', 'IPv4 Address', 'Endpoint CIDR', 'Source'], nodes.map((n) => [n.name, n.addresses[0] ?? '', n.podCIDRs.join(',') || '<none>', n.source])));
    });

  const bpf = program.command('bpf').description('BPF maps as the kernel holds them');
  const ipcache = (cmd: Command) => client(cmd).get<IpcacheEntry[]>('/v1/map/tendril_ipcache');
  bpf
    .command('ipcache')
    .description('the ipcache map (prefix -> identity, tunnel endpoint)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await ipcache(cmd);
      if (o.output === 'json') return json(rows);
      out(
        table(
          ['IP PREFIX/ADDRESS', 'IDENTITY'],
          rows.map((r) => [r.prefix, `identity=${r.identity} encryptkey=0 tunnelendpoint=${r.tunnelEndpoint ?? '0.0.0.0'} flags=${ipcacheFlags(r.flags)}`]),
        ),
      );
    });
  bpf
    .command('tunnel')
    .description('tunnel endpoints per prefix (from the ipcache)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = (await ipcache(cmd)).filter((r) => r.tunnelEndpoint && r.tunnelEndpoint !== '0.0.0.0');
      if (o.output === 'json') return json(rows.map((r) => ({ prefix: r.prefix, tunnelEndpoint: r.tunnelEndpoint })));
      out(table(['TUNNEL', 'VALUE'], rows.map((r) => [r.prefix, `${r.tunnelEndpoint}:0`])));
    });
  bpf
    .command('net')
    .description('BPF programs attached to the node\'s interfaces (like `bpftool net show`, with tcx)')
    .command('show')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<Attachment[]>('/v1/datapath/attachments');
      if (o.output === 'json') return json(rows);
      out(
        'tc:\n' +
          rows
            .map((r) =>
              r.attach === 'tcx'
                ? `${r.ifname}(${r.ifindex}) tcx/${r.direction} ${r.progName} prog_id ${r.progId} link_id ${r.linkId}\n`
                : `${r.ifname}(${r.ifindex}) clsact/${r.direction} ${r.progName} prog_id ${r.progId}\n`,
            )
            .join(''),
      );
    });
  const bpfEp = bpf.command('endpoint').description('the endpoint map (tendril_lxc)');
  bpfEp
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await client(cmd).get<EndpointInfo[]>('/v1/map/tendril_lxc');
      rows.sort((a, b) => a.lxcId - b.lxcId);
      if (o.output === 'json') return json(rows);
      out(
        table(
          ['IP ADDRESS', 'LOCAL ENDPOINT INFO'],
          rows.map((r) => [
            `${r.ip4}:0`,
            (r.flags & 1) !== 0
              ? '(localhost)'
              : `id=${r.lxcId} sec_id=${r.secId} flags=0x${r.flags.toString(16).padStart(4, '0')} ifindex=${r.ifindex} mac=${r.mac.toUpperCase()} nodemac=${r.nodeMac.toUpperCase()}`,
          ]),
        ),
      );
    });
}
