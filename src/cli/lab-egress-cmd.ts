// `tendril lab egress-gateway apply FILE|list|del NAME`.
import type { Command } from 'commander';
import { labEgressApply, labEgressDel, labEgressList, type LabEgressPolicy } from '../lab/egress.js';
import { labName } from './options.js';
import { table } from './table.js';

function warnStderr(line: string): void {
  process.stderr.write(`Warning: ${line}\n`);
}

function describe(p: LabEgressPolicy): string {
  const s = p.status;
  return s.gatewayIP ? `egress IP ${s.egressIP} via gateway ${s.gatewayNode} (${s.gatewayIP})` : `no gateway: ${s.problem ?? 'pending'}`;
}

export function registerLabEgress(lab: Command): void {
  const eg = lab.command('egress-gateway').description('TendrilEgressGatewayPolicy: selected pods reach destinations through a gateway node, with its egress IP');
  eg.command('apply')
    .description('create or update the policies of a YAML file; the operator picks the gateway and the egress IP')
    .argument('<file>')
    .option('--name <lab>', 'lab name')
    .action(async (file: string, _o: unknown, cmd: Command) => {
      for (const p of await labEgressApply(labName(cmd), file, { warn: warnStderr })) {
        process.stdout.write(`egress gateway policy ${p.spec.name}: ${describe(p)}; applied on every node\n`);
      }
    });
  eg.command('list')
    .option('--name <lab>', 'lab name')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const rows = await labEgressList(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAME', 'EGRESS IP', 'GATEWAY', 'DESTINATIONS', 'EXCLUDED', 'STATUS'],
          rows.map((p) => [
            p.spec.name,
            p.status.egressIP ?? '-',
            p.status.gatewayNode ? `${p.status.gatewayNode} (${p.status.gatewayIP})` : '-',
            p.spec.destinationCIDRs.join(','),
            p.spec.excludedCIDRs.join(',') || '-',
            p.status.problem ?? 'ok',
          ]),
        ),
      );
    });
  eg.command('del')
    .argument('<policy>')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      await labEgressDel(labName(cmd), name, { warn: warnStderr });
      process.stdout.write(`egress gateway policy ${name} deleted; no node applies it any more\n`);
    });
}
