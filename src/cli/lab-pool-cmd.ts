// `tendril lab pool add|list|del`: TendrilPodIPPools of a --ipam multi-pool lab (through the operator API).
import type { Command } from 'commander';
import { table } from './table.js';
import { LabError } from '../lab/errors.js';
import { labPoolAdd, labPoolDel, labPoolList } from '../lab/pools.js';
import { collect } from './options.js';
import { parseCount } from './lab-cmd.js';

export function registerLabPools(lab: Command, labName: (cmd: Command) => string): void {
  const pool = lab.command('pool').description('IP pools (TendrilPodIPPool) of a --ipam multi-pool lab; pods pick one with --annotation ipam.tendril.io/ip-pool=NAME');
  pool
    .command('add')
    .description('create a pool (or add CIDRs to it); overlaps with other pools or the cluster CIDR are refused')
    .argument('<name>')
    .option('--cidr <cidr>', 'IPv4 CIDR of the pool (repeatable)', collect, [])
    .option('--mask-size <n>', 'prefix length of each chunk a node gets (default 24)')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { cidr: string[]; maskSize?: string }, cmd: Command) => {
      if (o.cidr.length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Missing --cidr: pool "${name}" needs at least one CIDR`);
      const p = await labPoolAdd(labName(cmd), name, o.cidr, o.maskSize === undefined ? undefined : parseCount(o.maskSize, '--mask-size', 1, 30));
      process.stdout.write(`pool ${p.name}: ${p.cidrs.join(', ')}, /${p.maskSize} per node chunk\n`);
    });
  pool
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .option('--name <lab>', 'lab name')
    .action(async (o: { output?: string }, cmd: Command) => {
      const pools = await labPoolList(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(pools, null, 2) + '\n');
      process.stdout.write(
        table(
          ['POOL', 'CIDRS', 'MASK', 'CHUNKS USED/TOTAL', 'NODES', 'PROBLEM'],
          pools.map((p) => [
            p.name,
            p.cidrs.join(','),
            `/${p.maskSize}`,
            `${p.assigned}/${p.total}`,
            Object.entries(p.assignments).map(([n, c]) => `${n}:${c.join(',')}`).join(' ') || '-',
            p.problem ?? (p.exhausted ? `exhausted, waiting: ${p.exhausted.waiting.join(',')}` : '-'),
          ]),
        ),
      );
    });
  pool
    .command('del')
    .description('delete a pool no node uses (refused while a node holds a chunk of it)')
    .argument('<name>')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const r = await labPoolDel(labName(cmd), name);
      process.stdout.write(`pool ${r.deleted} deleted\n`);
    });
}
