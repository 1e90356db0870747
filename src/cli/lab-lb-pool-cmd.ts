// `tendril lab lb-pool add|list|del`: LoadBalancer IP pools (TendrilLoadBalancerIPPool) of a lab.
import type { Command } from 'commander';
import { labLbPoolAdd, labLbPoolDel, labLbPoolList } from '../lab/lb-pools.js';
import { LabError } from '../lab/errors.js';
import { collect } from './options.js';
import { table } from './table.js';

export function parseKeyValues(list: string[], what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list.flatMap((l) => l.split(','))) {
    const i = item.indexOf('=');
    if (i <= 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid ${what} "${item}": expected KEY=VALUE`);
    out[item.slice(0, i).trim()] = item.slice(i + 1).trim();
  }
  return out;
}

export function registerLabLbPools(lab: Command, labName: (cmd: Command) => string): void {
  const pool = lab.command('lb-pool').description('LoadBalancer IP pools: the operator gives LoadBalancer services their IPs');
  pool
    .command('add')
    .description('create or replace a pool')
    .argument('<name>')
    .option('--cidr <cidr>', 'a block of the pool (repeatable)', collect, [])
    .option('--start <ip>', 'first IP of a range block')
    .option('--stop <ip>', 'last IP of the range block (default: --start)')
    .option('--selector <k=v>', 'service label the pool selects (repeatable, or comma-separated; none: every service)', collect, [])
    .option('--allow-first-last-ips', 'hand out the network and broadcast address of a cidr block too')
    .option('--disabled', 'hand out nothing new from this pool')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { cidr: string[]; start?: string; stop?: string; selector: string[]; allowFirstLastIps?: boolean; disabled?: boolean }, cmd: Command) => {
      const p = await labLbPoolAdd(labName(cmd), name, {
        cidrs: o.cidr,
        selector: parseKeyValues(o.selector, '--selector'),
        ...(o.start !== undefined ? { start: o.start } : {}),
        ...(o.stop !== undefined ? { stop: o.stop } : {}),
        ...(o.allowFirstLastIps ? { allowFirstLastIPs: true } : {}),
        ...(o.disabled ? { disabled: true } : {}),
      });
      process.stdout.write(`lb-pool ${p.name}: ${p.spec.blocks.map((b) => b.cidr ?? `${b.start}-${b.stop}`).join(', ')}${p.spec.serviceSelector ? ` for services ${Object.entries(p.spec.serviceSelector.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`).join(',')}` : ' for every LoadBalancer service'}\n`);
    });
  pool
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .option('--name <lab>', 'lab name')
    .action(async (o: { output?: string }, cmd: Command) => {
      const list = await labLbPoolList(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAME', 'BLOCKS', 'SELECTOR', 'DISABLED', 'CONFLICTING', 'IPS AVAILABLE', 'IPS USED'],
          list.map((p) => {
            const conflict = p.status?.conditions.find((c) => c.type === 'tendril.io/pool-conflict');
            return [
              p.name,
              p.spec.blocks.map((b) => b.cidr ?? `${b.start}-${b.stop}`).join(','),
              Object.entries(p.spec.serviceSelector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<all>',
              String(p.spec.disabled),
              conflict ? (conflict.status === 'True' ? `True (${conflict.message})` : 'False') : '?',
              String(p.status?.available ?? '?'),
              String(p.status?.used ?? '?'),
            ];
          }),
        ),
      );
    });
  pool
    .command('del')
    .argument('<name>')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      await labLbPoolDel(labName(cmd), name);
      process.stdout.write(`lb-pool ${name} deleted; services keep IPs no other pool selects only until the next pass\n`);
    });
}
