// `tendril bpf l2 list`: the LoadBalancer IPs of the cluster, which node holds each one's L2 announcement lease, and
// whether this node answers ARP for it (tendril_l2_responder).
import type { Command } from 'commander';
import type { L2AnnouncementView } from '../l2/index.js';
import { ApiClient } from '../util/api-client.js';
import { resolveSocket } from './node-cmd.js';
import { table } from './table.js';

export function formatL2List(list: L2AnnouncementView[]): string {
  return table(['IP', 'LEASE HOLDER', 'ANSWERED HERE'], list.map((e) => [e.ip, e.holder ?? '<none>', e.announcedHere ? 'yes' : 'no']));
}

export function registerL2Views(program: Command): void {
  const bpf = program.commands.find((c) => c.name() === 'bpf') ?? program.command('bpf');
  bpf
    .command('l2')
    .description('L2 announcements: LoadBalancer IPs answered by ARP in BPF (tendril_l2_responder)')
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const list = await new ApiClient(resolveSocket(cmd.optsWithGlobals())).get<L2AnnouncementView[]>('/v1/l2');
      process.stdout.write(o.output === 'json' ? JSON.stringify(list, null, 2) + '\n' : formatL2List(list));
    });
}
