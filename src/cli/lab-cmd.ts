// `tendril lab …`: the embedded cluster on this machine.
import type { Command } from 'commander';
import { table } from './table.js';
import { DEFAULT_LAB, execIn, findNode, findPod, labDown, labNodeAdd, labNodeDel, labStatus, labUp, loadLab, podAdd, podDel } from '../lab/lab.js';
import { LabError } from '../lab/errors.js';

function labName(cmd: Command): string {
  const o = cmd.optsWithGlobals<{ name?: string; lab?: string }>();
  return o.name ?? o.lab ?? DEFAULT_LAB;
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v];
}

export function parseLabels(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const i = item.indexOf('=');
    const k = i < 0 ? item : item.slice(0, i);
    if (!/^([a-z0-9.-]+\/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/.test(k)) {
      throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid label "${item}": key "${k}" is not a valid label key`);
    }
    out[k] = i < 0 ? '' : item.slice(i + 1);
  }
  return out;
}

export function registerLab(program: Command): void {
  const lab = program.command('lab').description('a whole cluster on this machine (network namespaces, no uplink)');

  lab
    .command('up')
    .description('create the underlay, the nodes and one agent per node')
    .option('--name <name>', 'lab name (several labs can coexist)')
    .option('--nodes <k>', 'number of nodes (ctr, w1, w2, …)', '1')
    .option('--pod-cidr <cidr>', 'cluster pod CIDR, one /24 per node', '172.20.0.0/16')
    .option('--underlay-cidr <cidr>', 'node network (nodes get .100, .101, …)', '192.168.10.0/24')
    .option('--routing <mode>', 'tunnel (VXLAN, VNI = source identity) or native', 'tunnel')
    .option('--store <kind>', 'cluster store: local (hosted by the operator) or etcd', 'local')
    .option('--attach-mode <mode>', 'tcx (BPF links) or tc (clsact + cls_bpf)', 'tcx')
    .action(async (o: { nodes: string; podCidr: string; underlayCidr: string; routing: string; store: string; attachMode: string }, cmd: Command) => {
      if (o.attachMode !== 'tcx' && o.attachMode !== 'tc') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --attach-mode "${o.attachMode}": expected tcx or tc`);
      const name = labName(cmd);
      const nodes = Number(o.nodes);
      process.stdout.write(`Creating lab "${name}" with ${nodes} node(s)\n`);
      const t0 = Date.now();
      await labUp({
        name,
        nodes,
        podCidr: o.podCidr,
        underlayCidr: o.underlayCidr,
        routing: o.routing as 'tunnel',
        store: o.store as 'local',
        attachMode: o.attachMode,
        progress: (l) => process.stdout.write(`  ${l}\n`),
      });
      process.stdout.write(`Lab "${name}" is up in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    });

  lab
    .command('down')
    .description('remove every namespace, process, pinned object and file of the lab')
    .option('--name <name>', 'lab name')
    .action(async (_o: unknown, cmd: Command) => {
      const name = labName(cmd);
      const { removed } = await labDown(name);
      process.stdout.write(removed.length ? `Lab "${name}" removed: ${removed.length} item(s)\n` : `Lab "${name}": nothing to remove\n`);
    });

  lab
    .command('status')
    .description('nodes, agents and pods of the lab')
    .option('--name <name>', 'lab name')
    .option('-o, --output <fmt>', 'json')
    .action(async (o: { output?: string }, cmd: Command) => {
      const { st, nodes } = await labStatus(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify({ ...st, health: nodes.map((n) => ({ node: n.node.name, running: n.running, healthy: n.healthy })) }, null, 2) + '\n');
      process.stdout.write(`Lab ${st.name}: pod CIDR ${st.podCidr}, underlay ${st.underlayCidr}, routing ${st.routing}, store ${st.store} (${st.storeUrl})\n`);
      process.stdout.write(
        table(
          ['NODE', 'IPv4', 'POD CIDR', 'AGENT', 'PODS'],
          nodes.map((n) => [n.node.name, n.node.ip, n.node.podCidr, n.healthy ? `ready (pid ${n.node.pid})` : n.running ? `not ready (pid ${n.node.pid})` : 'not running', String(n.pods)]),
        ),
      );
    });

  const pod = lab.command('pod').description('pods of the lab');
  pod
    .command('add')
    .description('create a pod: its namespace, then CNI ADD exactly as a runtime runs it')
    .argument('<name>')
    .requiredOption('--node <node>', 'node to run on')
    .option('--namespace <ns>', 'Kubernetes-style namespace', 'default')
    .option('--label <k=v>', 'pod label (repeatable)', collect, [])
    .option('--serve <port>', 'run a small HTTP server in the pod answering with its name and IP')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { node: string; namespace: string; label: string[]; serve?: string }, cmd: Command) => {
      const p = await podAdd(labName(cmd), name, {
        node: o.node,
        namespace: o.namespace,
        labels: parseLabels(o.label),
        ...(o.serve !== undefined ? { serve: Number(o.serve) } : {}),
      });
      process.stdout.write(`pod ${p.namespace}/${p.name} on ${p.node}: ${p.ip}${p.serve ? `, serving HTTP on :${p.serve.port}` : ''}\n`);
    });
  pod
    .command('list')
    .option('-o, --output <fmt>', 'json')
    .option('--name <lab>', 'lab name')
    .action((o: { output?: string }, cmd: Command) => {
      const st = loadLab(labName(cmd));
      if (o.output === 'json') return void process.stdout.write(JSON.stringify(st.pods, null, 2) + '\n');
      process.stdout.write(
        table(
          ['NAME', 'NAMESPACE', 'NODE', 'IP', 'LABELS'],
          st.pods.map((p) => [p.name, p.namespace, p.node, p.ip, Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(',') || '<none>']),
        ),
      );
    });
  pod
    .command('del')
    .description('CNI DEL, then remove the pod namespace')
    .argument('<name>', 'NAME or NAMESPACE/NAME')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const p = await podDel(labName(cmd), name);
      process.stdout.write(`pod ${p.namespace}/${p.name} deleted\n`);
    });

  lab
    .command('exec')
    .description('run a command inside a pod: tendril lab exec POD -- CMD…')
    .argument('<pod>')
    .argument('<cmd...>')
    .option('--name <lab>', 'lab name')
    .passThroughOptions()
    .action((podRef: string, argv: string[], _o: unknown, cmd: Command) => {
      const p = findPod(loadLab(labName(cmd)), podRef);
      process.exitCode = execIn(p.netns, argv);
    });

  const node = lab.command('node').description('nodes of the lab');
  node
    .command('add')
    .description('add a worker node (next wN) with its own agent')
    .option('--name <lab>', 'lab name')
    .action(async (_o: unknown, cmd: Command) => {
      const n = await labNodeAdd(labName(cmd));
      process.stdout.write(`node ${n.name} ${n.ip}: pods ${n.podCidr}, agent pid ${n.pid} ready\n`);
    });
  node
    .command('del')
    .description('remove a node as if it left: agent, pods and namespaces go, its Node is deleted from the store')
    .argument('<node>')
    .option('--name <lab>', 'lab name')
    .action(async (nodeName: string, _o: unknown, cmd: Command) => {
      const n = await labNodeDel(labName(cmd), nodeName);
      process.stdout.write(`node ${n.name} removed\n`);
    });
  node
    .command('exec')
    .description('run a command inside a node: tendril lab node exec NODE -- CMD…')
    .argument('<node>')
    .argument('<cmd...>')
    .option('--name <lab>', 'lab name')
    .passThroughOptions()
    .action((nodeName: string, argv: string[], _o: unknown, cmd: Command) => {
      const n = findNode(loadLab(labName(cmd)), nodeName);
      process.exitCode = execIn(n.netns, argv);
    });
}
