// `tendril lab service add|list|del`.
import type { Command } from 'commander';
import { table } from './table.js';
import { parseKeyValues } from './lab-lb-pool-cmd.js';
import { labServiceStatuses } from '../lab/lb-pools.js';
import type { ServiceStatusSpec } from '../lb/index.js';
import { LabError } from '../lab/errors.js';
import { labServiceAdd, labServiceDel, labServiceEndpoints, labServiceList, parseBackend, parseServicePort } from '../lab/services.js';
import { collect } from './options.js';

function parseSelector(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list.flatMap((l) => l.split(','))) {
    const i = item.indexOf('=');
    if (i <= 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --selector "${item}": expected KEY=VALUE`);
    out[item.slice(0, i)] = item.slice(i + 1);
  }
  return out;
}

function warnStderr(line: string): void {
  process.stderr.write(`Warning: ${line}\n`);
}

export function registerLabServices(lab: Command, labName: (cmd: Command) => string): void {
  const svc = lab.command('service').description('services: a ClusterIP (and node ports) load-balanced in BPF on every node');
  svc
    .command('add')
    .description('create or update a service; the operator allocates its ClusterIP and node ports')
    .argument('<name>')
    .option('--namespace <ns>', 'namespace of the service and its backends', 'default')
    .option('--selector <k=v>', 'pod label the backends carry (repeatable, or comma-separated)', collect, [])
    .option('--port <spec>', 'PORT[:TARGETPORT][/TCP|UDP][,NAME], TARGETPORT a number or a container port name (repeatable)', collect, [])
    .option('--type <type>', 'ClusterIP, NodePort or LoadBalancer', 'ClusterIP')
    .option('--cluster-ip <ip>', 'a ClusterIP of your choice (from the service CIDR)')
    .option('--external-traffic-policy <policy>', 'Cluster or Local')
    .option('--internal-traffic-policy <policy>', 'Cluster or Local')
    .option('--session-affinity <mode>', 'None or ClientIP')
    .option('--session-affinity-timeout <seconds>', 'ClientIP affinity timeout')
    .option('--label <k=v>', 'a label of the service itself (what LoadBalancer IP pools select; repeatable)', collect, [])
    .option('--annotation <k=v>', 'an annotation, e.g. lbipam.tendril.io/ips=IP or lbipam.tendril.io/sharing-key=KEY (repeatable)', collect, [])
    .option('--source-range <cidr>', 'loadBalancerSourceRanges: a client CIDR that may reach the LoadBalancer IPs from outside (repeatable, or comma-separated; none: any)', collect, [])
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: Record<string, string | string[] | undefined>, cmd: Command) => {
      const ports = (o['port'] as string[]).map(parseServicePort);
      if (ports.length === 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', 'Missing --port: a service needs at least one, e.g. --port 80:8080/TCP');
      const timeout = o['sessionAffinityTimeout'] as string | undefined;
      const s = await labServiceAdd(
        labName(cmd),
        name,
        {
          namespace: o['namespace'] as string,
          selector: parseSelector(o['selector'] as string[]),
          ports,
          type: o['type'] as string,
          ...(o['clusterIp'] !== undefined ? { clusterIP: o['clusterIp'] as string } : {}),
          ...(o['externalTrafficPolicy'] !== undefined ? { externalTrafficPolicy: o['externalTrafficPolicy'] as string } : {}),
          ...(o['internalTrafficPolicy'] !== undefined ? { internalTrafficPolicy: o['internalTrafficPolicy'] as string } : {}),
          ...(o['sessionAffinity'] !== undefined ? { sessionAffinity: o['sessionAffinity'] as string } : {}),
          ...(timeout !== undefined ? { sessionAffinityTimeoutSeconds: Number(timeout) } : {}),
          ...((o['label'] as string[]).length ? { labels: parseKeyValues(o['label'] as string[], '--label') } : {}),
          ...((o['annotation'] as string[]).length ? { annotations: parseKeyValues(o['annotation'] as string[], '--annotation') } : {}),
          ...((o['sourceRange'] as string[]).length ? { loadBalancerSourceRanges: (o['sourceRange'] as string[]).flatMap((r) => r.split(',')).map((r) => r.trim()).filter((r) => r !== '') } : {}),
        },
        { warn: warnStderr },
      );
      const np = s.ports.filter((p) => p.nodePort !== undefined).map((p) => `${p.nodePort}/${p.protocol}`);
      const src = s.loadBalancerSourceRanges?.length ? `, source ranges ${s.loadBalancerSourceRanges.join(',')}` : '';
      process.stdout.write(`service ${s.namespace}/${s.name} (${s.type}): ${s.clusterIP} ${s.ports.map((p) => `${p.port}/${p.protocol}`).join(',')}${np.length ? `, node ports ${np.join(',')}` : ''}${src}; loaded on every node\n`);
    });
  svc
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .option('--name <lab>', 'lab name')
    .action(async (o: { output?: string }, cmd: Command) => {
      const list = await labServiceList(labName(cmd));
      const lb = await labServiceStatuses(labName(cmd)).catch(() => new Map<string, ServiceStatusSpec>());
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(list, null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAMESPACE', 'NAME', 'TYPE', 'CLUSTER-IP', 'EXTERNAL-IP', 'PORT(S)', 'SELECTOR'],
          list.map((s) => [
            s.namespace,
            s.name,
            s.type,
            s.clusterIP ?? '<pending>',
            s.type === 'LoadBalancer' ? lb.get(`${s.namespace}/${s.name}`)?.loadBalancer.ingress.join(',') || '<pending>' : '<none>',
            s.ports.map((p) => `${p.port}${p.nodePort !== undefined ? `:${p.nodePort}` : ''}/${p.protocol}`).join(','),
            Object.entries(s.selector).map(([k, v]) => `${k}=${v}`).join(',') || '<none>',
          ]),
        ),
      );
    });
  svc
    .command('endpoints')
    .description('the explicit backends of a service without a selector (EndpointSlices); any address, also outside the pod CIDRs')
    .argument('<service>', 'NAMESPACE/NAME (or NAME in default)')
    .option('--backend <ip:port>', 'a backend address and port (repeatable, or comma-separated; none: no backends)', collect, [])
    .option('--port-name <name>', 'which port of the service (needed when it has several)')
    .option('--name <lab>', 'lab name')
    .action(async (ref: string, o: { backend: string[]; portName?: string }, cmd: Command) => {
      const backends = o.backend.flatMap((b) => b.split(',')).filter((b) => b.trim() !== '').map(parseBackend);
      const slices = await labServiceEndpoints(labName(cmd), ref, backends, o.portName !== undefined ? { portName: o.portName } : {}, { warn: warnStderr });
      process.stdout.write(`service ${ref.includes('/') ? ref : `default/${ref}`}: ${backends.length ? backends.map((b) => `${b.ip}:${b.port}`).join(', ') : 'no backends'} (EndpointSlice ${slices.map((s) => s.name).join(', ') || '-'}); loaded on every node\n`);
    });
  svc
    .command('del')
    .argument('<service>', 'NAMESPACE/NAME (or NAME in default)')
    .option('--name <lab>', 'lab name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const deleted = await labServiceDel(labName(cmd), ref, { warn: warnStderr });
      process.stdout.write(`service ${deleted} deleted; no node load-balances it any more\n`);
    });
}
