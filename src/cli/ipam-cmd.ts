// `tendril ipam list`: every pod CIDR of the cluster (pool, CIDR, node) with how much of it is used. The nodes and
// their CIDRs come from the agent asked; use per CIDR from each node's own agent where it can be reached (in a lab,
// every node's; otherwise the local one), "-" elsewhere.
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import { table } from './table.js';
import type { NodeView, StatusView } from '../agent/index.js';
import { DEFAULT_LAB, labExists, listLabs, loadLab } from '../lab/lab.js';
import { resolveSocket } from './node-cmd.js';

interface GlobalOpts {
  lab?: string;
  node?: string;
  socket?: string;
}

export interface IpamRow {
  pool: string;
  cidr: string;
  node: string;
  used: number | null;
  total: number | null;
}

/** Rows of `ipam list`: the cluster's CIDRs, with use from the statuses at hand (by node name). */
export function ipamRows(nodes: NodeView[], statuses: Map<string, StatusView>): IpamRow[] {
  const rows: IpamRow[] = [];
  for (const n of nodes) {
    const pools = statuses.get(n.name)?.ipam?.pools ?? {};
    const known = new Map<string, { pool: string; used: number; capacity: number }>();
    for (const [pool, p] of Object.entries(pools)) for (const c of p.cidrs) known.set(c.cidr, { pool, used: c.used, capacity: c.capacity });
    // --ipam multi-pool: the IP pool each CIDR belongs to.
    for (const p of statuses.get(n.name)?.ipam?.['ip-pools'] ?? []) for (const c of p.cidrs) known.set(c.cidr, { pool: p.pool, used: c.used, capacity: c.capacity });
    for (const cidr of n.podCIDRs) {
      const k = known.get(cidr);
      const known2 = k !== undefined && !Number.isNaN(k.used);
      rows.push({ pool: k?.pool ?? 'default', cidr, node: n.name, used: known2 ? k.used : null, total: known2 ? k.capacity : null });
    }
  }
  return rows;
}

export function registerIpamCommands(program: Command): void {
  const ipam = program.command('ipam').description('pod address management of the cluster');
  ipam
    .command('list')
    .description('every pod CIDR: pool, CIDR, node, used/total')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOpts>();
      const nodes = await new ApiClient(resolveSocket(g)).get<NodeView[]>('/v1/cluster/nodes');
      const sockets = new Map<string, string>();
      const lab = g.socket ? undefined : (g.lab ?? (labExists(DEFAULT_LAB) ? DEFAULT_LAB : listLabs().length === 1 ? listLabs()[0] : undefined));
      if (lab) for (const n of loadLab(lab).nodes) sockets.set(n.name, n.socket);
      const local = nodes.find((n) => n.source === 'local');
      if (local && !sockets.has(local.name)) sockets.set(local.name, resolveSocket(g));
      const statuses = new Map<string, StatusView>();
      await Promise.all(
        [...sockets].map(async ([name, socket]) => {
          const st = await new ApiClient(socket).get<StatusView>('/v1/healthz').catch(() => undefined);
          if (st) statuses.set(name, st);
        }),
      );
      const rows = ipamRows(nodes, statuses);
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      process.stdout.write(table(['POOL', 'CIDR', 'NODE', 'USED'], rows.map((r) => [r.pool, r.cidr, r.node, r.used === null ? '-' : `${r.used}/${r.total}`])));
    });
}
