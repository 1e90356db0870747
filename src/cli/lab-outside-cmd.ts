// `tendril lab external|network|masq …`: the lab's outside (hosts that are no nodes, networks behind them) and the
// agents' non-masquerade set.
import type { Command } from 'commander';
import { table } from './table.js';
import { execIn, loadLab, restartAgent } from '../lab/lab.js';
import { LabError } from '../lab/errors.js';
import { externalAdd, externalDel, networkAdd, networkDel, outsideNetns, masqSet, findNetwork } from '../lab/outside.js';
import { masqYaml } from '../lab/masq.js';
import { collect, labName } from './options.js';

/** `--serve 80,8080`: each a port 1-65535 (checked again where it is used). */
function ports(text: string | undefined): number[] | undefined {
  if (text === undefined) return undefined;
  return text.split(',').map((p) => {
    if (!/^\d{1,5}$/.test(p.trim())) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --serve "${text}": expected ports like 80 or 80,8080`);
    return Number(p);
  });
}

export function registerLabOutside(lab: Command): void {
  const ext = lab.command('external').description('hosts on the underlay that are not nodes of the cluster (the seed\'s router VM)');
  ext
    .command('add')
    .description('a host in its own namespace on the underlay bridge; it routes the networks added behind it')
    .argument('<host>')
    .requiredOption('--ip <ip>', 'its address on the underlay, e.g. 192.168.10.200')
    .option('--serve <ports>', 'answer HTTP on TCP and echo on UDP on each port, with its name and the source address it saw')
    .option('--name <lab>', 'lab name')
    .action(async (host: string, o: { ip: string; serve?: string }, cmd: Command) => {
      const sv = ports(o.serve);
      const x = await externalAdd(labName(cmd), host, { ip: o.ip, ...(sv ? { serve: sv } : {}) });
      process.stdout.write(`external host ${x.name}: ${x.ip} on the underlay${x.serve ? `, serving on :${x.serve.ports.join(',')}` : ''}\n`);
    });
  ext
    .command('list')
    .option('--name <lab>', 'lab name')
    .option('-o, --output <fmt>', 'json')
    .action((o: { output?: string }, cmd: Command) => {
      const st = loadLab(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(st.externals ?? [], null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAME', 'IPv4', 'SERVES', 'ROUTES FOR'],
          (st.externals ?? []).map((x) => [
            x.name,
            x.ip,
            x.serve ? x.serve.ports.join(',') : '-',
            (st.networks ?? []).filter((n) => n.via === x.name).map((n) => `${n.cidr}${n.routeBack ? ' (+pod CIDRs)' : ''}`).join(', ') || '-',
          ]),
        ),
      );
    });
  ext
    .command('del')
    .description('remove an external host and the networks behind it')
    .argument('<host>')
    .option('--name <lab>', 'lab name')
    .action(async (host: string, _o: unknown, cmd: Command) => {
      const r = await externalDel(labName(cmd), host);
      process.stdout.write(`external host ${r.external.name} removed${r.networks.length ? ` with network(s) ${r.networks.join(', ')}` : ''}\n`);
    });
  ext
    .command('exec')
    .description('run a command on an external host or a network host: tendril lab external exec HOST -- CMD…')
    .argument('<host>', 'external host name, or a network host by name (NET-hK) or address')
    .argument('<cmd...>')
    .option('--name <lab>', 'lab name')
    .passThroughOptions()
    .action((host: string, argv: string[], _o: unknown, cmd: Command) => {
      process.exitCode = execIn(outsideNetns(loadLab(labName(cmd)), host), argv);
    });

  const net = lab.command('network').description('networks behind an external host, which routes them');
  net
    .command('add')
    .argument('<network>')
    .requiredOption('--cidr <cidr>', 'e.g. 10.0.0.0/16 (the external host takes its first address)')
    .requiredOption('--via <external>', 'the external host routing it')
    .option('--host <ip>', 'a host of the network (repeatable; default the .10 of its second /24)', collect, [])
    .option('--serve <ports>', 'hosts answer HTTP on TCP and echo on UDP on each port, with their name and the source address they saw')
    .option('--route-back', 'the external host routes every node\'s pod CIDR via the node (pods reach the network without masquerading)')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { cidr: string; via: string; host: string[]; serve?: string; routeBack?: boolean }, cmd: Command) => {
      const sv = ports(o.serve);
      const n = await networkAdd(labName(cmd), name, { cidr: o.cidr, via: o.via, hosts: o.host, routeBack: o.routeBack === true, ...(sv ? { serve: sv } : {}) });
      process.stdout.write(`network ${n.name} ${n.cidr} via ${n.via} (gateway ${n.gateway}${n.routeBack ? ', routes pod CIDRs back to the nodes' : ''}): hosts ${n.hosts.map((h) => `${h.name} ${h.ip}`).join(', ')}\n`);
    });
  net
    .command('list')
    .option('--name <lab>', 'lab name')
    .option('-o, --output <fmt>', 'json')
    .action((o: { output?: string }, cmd: Command) => {
      const st = loadLab(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(st.networks ?? [], null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAME', 'CIDR', 'VIA', 'ROUTE-BACK', 'HOSTS'],
          (st.networks ?? []).map((n) => [n.name, n.cidr, n.via, n.routeBack ? 'yes' : 'no', n.hosts.map((h) => `${h.name} ${h.ip}`).join(', ')]),
        ),
      );
    });
  net
    .command('del')
    .argument('<network>')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      findNetwork(loadLab(labName(cmd)), name);
      const n = await networkDel(labName(cmd), name);
      process.stdout.write(`network ${n.name} removed\n`);
    });

  const masq = lab.command('masq').description('the agents\' ip-masq-agent config (non-masquerade CIDRs)');
  masq
    .command('set')
    .description('rewrite every node\'s ip-masq-agent file (agents re-read it); no CIDR: the agent\'s defaults')
    .option('--non-masquerade-cidr <cidr>', 'a destination pods reach with their own address (repeatable)', collect, [])
    .option('--masq-link-local', 'masquerade towards 169.254.0.0/16 too')
    .option('--name <lab>', 'lab name')
    .action(async (o: { nonMasqueradeCidr: string[]; masqLinkLocal?: boolean }, cmd: Command) => {
      const name = labName(cmd);
      const r = masqSet(name, { nonMasqueradeCidrs: o.nonMasqueradeCidr, masqLinkLocal: o.masqLinkLocal === true });
      process.stdout.write(`ip-masq-agent config of ${r.files.length} node(s):\n${masqYaml(r.masq).trimEnd().replace(/^/gm, '  ')}\n`);
      if (r.needsRestart) {
        // The agents were started without a file to read: they get the flag now.
        for (const n of loadLab(name).nodes) {
          await restartAgent(name, n.name);
          process.stdout.write(`  agent of ${n.name} restarted with --enable-ip-masq-agent\n`);
        }
      }
    });
  masq
    .command('show')
    .option('--name <lab>', 'lab name')
    .action((_o: unknown, cmd: Command) => {
      const st = loadLab(labName(cmd));
      process.stdout.write(st.masq ? masqYaml(st.masq) : 'no ip-masq-agent config: agents masquerade to everything outside the cluster\n');
    });
}
