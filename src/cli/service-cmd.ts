// `tendril service list` and `tendril bpf lb list`: the node's service frontends as its BPF maps hold them.
import type { Command } from 'commander';
import { ApiClient } from '../util/api-client.js';
import { resolveSocket } from './node-cmd.js';
import { table } from './table.js';
import type { ServiceListEntry } from '../lb/index.js';

function client(cmd: Command): ApiClient {
  return new ApiClient(resolveSocket(cmd.optsWithGlobals()));
}

/** Cilium's `service list` table: one row per frontend, one line per backend. */
export function formatServiceList(list: ServiceListEntry[]): string {
  return table(
    ['ID', 'Frontend', 'Service Type', 'Backend'],
    // loadBalancerSourceRanges (not in Cilium's table) as a last line of the Backend cell, the one column without padding.
    list.map((s) => [String(s.id), s.frontend, s.type, [...(s.backends.length ? s.backends.map((b, i) => `${i + 1} => ${b} (active)`) : ['']), ...(s.sourceRanges?.length ? [`(source ranges: ${s.sourceRanges.join(', ')})`] : [])]]),
  );
}

/** `bpf lb list`: frontend -> backends as the service map's slots name them. */
export function formatBpfLbList(list: ServiceListEntry[]): string {
  return table(
    ['SERVICE ADDRESS', 'BACKEND ADDRESS (REVNAT_ID) (SLOT)'],
    list.map((s) => [s.frontend, [`0.0.0.0:0 (${s.id}) (0) [${s.type}${s.sourceRanges?.length ? ', source ranges' : ''}]`, ...s.backends.map((b, i) => `${b} (${s.id}) (${i + 1})`), ...(s.sourceRanges ?? []).map((c) => `source range ${c} (${s.id})`)]]),
  );
}

export function registerServiceViews(program: Command): void {
  const svc = program.command('service').description('service frontends of the node (BPF load-balancing)');
  svc
    .command('list')
    .description('frontends and their backends, as `cilium-dbg service list`')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const list = await client(cmd).get<ServiceListEntry[]>('/v1/service');
      process.stdout.write(o.output === 'json' ? JSON.stringify(list, null, 2) + '\n' : formatServiceList(list));
    });
  const bpf = program.commands.find((c) => c.name() === 'bpf') ?? program.command('bpf');
  bpf
    .command('lb')
    .description('the service load-balancing maps (tendril_lb4_services, tendril_lb4_backends)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const list = await client(cmd).get<ServiceListEntry[]>('/v1/service');
      process.stdout.write(o.output === 'json' ? JSON.stringify(list, null, 2) + '\n' : formatBpfLbList(list));
    });
}
