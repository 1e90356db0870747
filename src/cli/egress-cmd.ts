// `tendril bpf egress list`: the egress gateway policy map as the kernel holds it (cilium-dbg bpf egress list), and the
// egress gateway line of `tendril status`.
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import type { StatusView } from '../agent/index.js';
import type { EgressKey, EgressValue } from '../egress/index.js';
import { EXCLUDED_GATEWAY } from '../egress/index.js';
import { table } from './table.js';
import { resolveSocket } from './node-cmd.js';

export function formatEgressList(rows: Array<EgressKey & EgressValue>): string {
  return table(
    ['Source IP', 'Destination CIDR', 'Egress IP', 'Gateway IP'],
    rows.map((r) => [r.source, r.destination, r.gatewayIP === EXCLUDED_GATEWAY ? '0.0.0.0' : r.egressIP, r.gatewayIP === EXCLUDED_GATEWAY ? 'Excluded CIDR' : r.gatewayIP]),
  );
}

/** `tendril status`: map entries, the egress IPs held here, the last sync, and the node lease's timing. */
export function formatEgressStatus(e: StatusView['egressGateway'], lease: NonNullable<StatusView['node-lease']> | null): string {
  if (!e) return 'Disabled (no cluster store)';
  const held = e.gatewayOf.length ? `gateway of ${e.gatewayOf.map((g) => `${g.ip} (${g.policy}, ${g.device})`).join(', ')}` : 'gateway of none';
  const leaseText = lease
    ? `; node lease renewed every ${lease['renew-interval-ms'] / 1000}s, lasts ${lease['duration-ms'] / 1000}s${lease.error ? ` (renewal failing: ${lease.error})` : lease['last-renewed'] ? '' : ' (not renewed yet)'}`
    : '';
  return `${e.lastError ? `Error: ${e.lastError}   ` : 'Ok   '}${e.entries} map entries, ${held}${e.lastSync ? `; last sync ${e.lastSync.at}` : '; not synced yet'}${leaseText}`;
}

export function registerEgressViews(program: Command): void {
  const bpf = program.commands.find((c) => c.name() === 'bpf') ?? program.command('bpf');
  bpf
    .command('egress')
    .description('the egress gateway policy map (tendril_egress_gw_policy_v4)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await new ApiClient(resolveSocket(cmd.optsWithGlobals())).get<Array<EgressKey & EgressValue>>('/v1/map/egress');
      if (o.output === 'json') process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      else process.stdout.write(formatEgressList(rows));
    });
}
