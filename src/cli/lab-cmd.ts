// `tendril lab …`: the embedded cluster on this machine.
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { table } from './table.js';
import { execIn, findNode, findPod, labDown, labNodeAdd, labNodeDel, labStatus, labUp, loadLab, podAdd, podDel } from '../lab/lab.js';
import { labNodePodCidrs } from '../lab/ipam.js';
import { LabError } from '../lab/errors.js';
import { labPodSetReady } from '../lab/k8s-kubelet.js';
import { labNamespaceList, labNamespaceSet, labPodLabel, labPolicyApply, labPolicyDelete, parseLabelChanges } from '../lab/security.js';
import type { NamedPort } from '../store/types.js';
import { labelKeyProblem } from '../policy/index.js';
import { outsideForNode } from '../lab/outside.js';
import { registerLabOutside } from './lab-outside-cmd.js';
import { registerLabEgress } from './lab-egress-cmd.js';
import { registerLabServices } from './lab-service-cmd.js';
import { registerLabLbPools } from './lab-lb-pool-cmd.js';
import { collect, labName } from './options.js';
import { registerLabPools } from './lab-pool-cmd.js';

/** `--label KEY=VALUE` (KEY= for an empty value); a bare KEY is refused, as kubectl's --labels does. */
export function parseLabels(list: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list) {
    const i = item.indexOf('=');
    if (i < 0) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid label "${item}": expected KEY=VALUE (KEY= for an empty value)`);
    const k = item.slice(0, i);
    const problem = labelKeyProblem(k);
    if (problem) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid label "${item}": ${problem}`);
    out[k] = item.slice(i + 1);
  }
  return out;
}

/** A whole number option in [min, max]: "abc", "2.5" or "" are refused before anything is done. */
export function parseCount(text: string, flag: string, min: number, max: number): number {
  const n = /^\d+$/.test(text.trim()) ? Number(text) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid ${flag} "${text}": expected a whole number from ${min} to ${max}`);
  return n;
}

/**
 * --k8s-kubeconfig: an absolute path to a readable kubeconfig (agents and operator run elsewhere, so a relative path
 * would name another file), and the apiserver replaces the lab's store (--store is local by default, etcd clashes).
 */
export function parseLabKubeconfig(file: string, store: string): string {
  if (store !== 'local') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Cannot use --store ${store} with --k8s-kubeconfig: in Kubernetes mode the apiserver is the cluster store`);
  const abs = path.resolve(file);
  try {
    fs.accessSync(abs, fs.constants.R_OK);
  } catch (err) {
    throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --k8s-kubeconfig "${file}": ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : 'not readable'} (${abs})`);
  }
  if (!fs.statSync(abs).isFile()) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --k8s-kubeconfig "${file}": not a file (${abs})`);
  return abs;
}

/** Warnings of a change that is stored but not yet applied everywhere (a node is down) go to stderr. */
function warner(): { warn: (line: string) => void; count: () => number } {
  let n = 0;
  return {
    warn: (line) => {
      n++;
      process.stderr.write(`Warning: ${line}\n`);
    },
    count: () => n,
  };
}

/** `--port NAME=PORT[/PROTO]` (protocol TCP by default), Kubernetes' named container port. */
export function parseNamedPorts(list: string[]): NamedPort[] {
  return list.map((item) => {
    const m = /^([a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?)=(\d{1,5})(?:\/(TCP|UDP|SCTP))?$/i.exec(item);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535 || !/[a-z]/i.test(m[1]!)) {
      throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --port "${item}": expected NAME=PORT[/TCP|UDP|SCTP], NAME up to 15 of a-z, 0-9, "-" (e.g. http=80/TCP)`);
    }
    return { name: m[1]!.toLowerCase(), port, protocol: (m[4]?.toUpperCase() ?? 'TCP') as NamedPort['protocol'] };
  });
}

function formatLabels(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(',') || '<none>';
}

export function registerLab(program: Command): void {
  const lab = program.command('lab').description('a whole cluster on this machine (network namespaces, no uplink)');
  lab.hook('preAction', () => {
    if (process.getuid?.() !== 0) {
      throw new LabError('TENDRIL_ERR_PERMISSION', 'tendril lab needs root: it creates network namespaces and BPF objects and keeps its state root-only; run it as root (e.g. with sudo)');
    }
  });

  lab
    .command('up')
    .description('create the underlay, the nodes and one agent per node')
    .option('--name <name>', 'lab name (several labs can coexist)')
    .option('--nodes <k>', 'number of nodes (ctr, w1, w2, …)', '1')
    .option('--pod-cidr <cidr>', 'cluster pod CIDR, one /24 per node', '172.20.0.0/16')
    .option('--underlay-cidr <cidr>', 'node network (nodes get .100, .101, …)', '192.168.10.0/24')
    .option('--routing <mode>', 'tunnel (VXLAN, VNI = source identity) or native', 'tunnel')
    .option('--store <kind>', 'cluster store: local (hosted by the operator) or etcd', 'local')
    .option('--etcd-members <k>', 'members of the lab\'s etcd cluster with --store etcd (agents are given all of them)', '1')
    .option('--attach-mode <mode>', 'tcx (BPF links) or tc (clsact + cls_bpf)', 'tcx')
    .option('--non-masquerade-cidr <cidr>', 'pods keep their own address towards it: an ip-masq-agent file per node (repeatable)', collect, [])
    .option('--ipam <mode>', 'cluster-pool (the operator carves node CIDRs), kubernetes (the lab gives each node its CIDR) or multi-pool (cluster-pool plus lab pool add)', 'cluster-pool')
    .option('--cluster-pool-mask-size <bits>', 'size of each node CIDR', '24')
    .option('--ipam-pre-allocate <n>', "agents ask for another CIDR when fewer addresses are free (agent's default 8)")
    .option('--k8s-kubeconfig <file>', 'Kubernetes mode: agents and operator use this apiserver as the cluster store (CRDs, Pods, Services, EndpointSlices), the lab plays its pods\' kubelet')
    .option('--socket-lb', 'socket-level load-balancing: a cgroup per node (under <cgroup2>/tendril-<lab>/) where node and pod processes run, the agent\'s sock programs on it')
    .action(async (o: { socketLb?: boolean; k8sKubeconfig?: string; nodes: string; podCidr: string; underlayCidr: string; routing: string; store: string; etcdMembers: string; attachMode: string; ipam: string; clusterPoolMaskSize: string; ipamPreAllocate?: string; nonMasqueradeCidr: string[] }, cmd: Command) => {
      if (!/^\d+$/.test(o.clusterPoolMaskSize)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --cluster-pool-mask-size "${o.clusterPoolMaskSize}": expected 16-30`);
      if (o.ipamPreAllocate !== undefined && !/^\d+$/.test(o.ipamPreAllocate)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --ipam-pre-allocate "${o.ipamPreAllocate}": expected a number of addresses`);
      if (!/^\d+$/.test(o.etcdMembers)) throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --etcd-members "${o.etcdMembers}": expected 1-7`);
      if (o.attachMode !== 'tcx' && o.attachMode !== 'tc') throw new LabError('TENDRIL_ERR_LAB_INVALID', `Invalid --attach-mode "${o.attachMode}": expected tcx or tc`);
      const kubeconfig = o.k8sKubeconfig === undefined ? undefined : parseLabKubeconfig(o.k8sKubeconfig, o.store);
      const name = labName(cmd);
      const nodes = parseCount(o.nodes, '--nodes', 1, 32);
      process.stdout.write(`Creating lab "${name}" with ${nodes} node(s)\n`);
      const t0 = Date.now();
      await labUp({
        name,
        nodes,
        podCidr: o.podCidr,
        underlayCidr: o.underlayCidr,
        routing: o.routing as 'tunnel',
        store: o.store as 'local',
        etcdMembers: Number(o.etcdMembers),
        attachMode: o.attachMode,
        nonMasqueradeCidrs: o.nonMasqueradeCidr,
        ...(o.socketLb ? { socketLb: true } : {}),
        ...(kubeconfig ? { kubeconfig } : {}),
        ipam: {
          mode: o.ipam as 'cluster-pool' | 'kubernetes' | 'multi-pool',
          maskSize: Number(o.clusterPoolMaskSize),
          ...(o.ipamPreAllocate !== undefined ? { preAllocate: Number(o.ipamPreAllocate) } : {}),
        },
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
      process.stdout.write(`Lab ${st.name}: pod CIDR ${st.podCidr}, underlay ${st.underlayCidr}, routing ${st.routing}, ${st.kubeconfig ? `store kubernetes (${st.kubeconfig})` : `store ${st.store} (${st.storeUrl})`}\n`);
      process.stdout.write(
        table(
          ['NODE', 'IPv4', 'POD CIDR', 'AGENT', 'PODS'],
          nodes.map((n) => [n.node.name, n.node.ip, n.node.podCidr, n.healthy ? `ready (pid ${n.node.pid})` : n.running ? `not ready (pid ${n.node.pid})` : 'not running', String(n.pods)]),
        ),
      );
      for (const x of st.externals ?? []) process.stdout.write(`External host ${x.name} ${x.ip}${x.serve ? `, serving :${x.serve.ports.join(',')}` : ''}\n`);
      for (const n of st.networks ?? []) process.stdout.write(`Network ${n.name} ${n.cidr} via ${n.via}${n.routeBack ? ' (routes pod CIDRs back)' : ''}: ${n.hosts.map((h) => h.ip).join(', ')}\n`);
      if (st.masq) process.stdout.write(`Non-masquerade CIDRs (ip-masq-agent): ${st.masq.nonMasqueradeCidrs.join(', ') || 'the agent\'s defaults'}${st.masq.masqLinkLocal ? ', masqLinkLocal' : ''}\n`);
    });

  const pod = lab.command('pod').description('pods of the lab');
  pod
    .command('add')
    .description('create a pod: its namespace, then CNI ADD exactly as a runtime runs it')
    .argument('<name>')
    .requiredOption('--node <node>', 'node to run on')
    .option('--namespace <ns>', 'Kubernetes-style namespace', 'default')
    .option('--label <k=v>', 'pod label (repeatable)', collect, [])
    .option('--annotation <k=v>', 'pod annotation, e.g. ipam.tendril.io/ip-pool=blue (repeatable)', collect, [])
    .option('--serve <ports>', 'run a small server in the pod answering with its name: HTTP on TCP and echo on UDP, on each port (e.g. 80,81)')
    .option('--port <name=port/proto>', 'declare a named container port, e.g. http=80/TCP (repeatable)', collect, [])
    .option('--service-account <name>', "the pod's service account (security label k8s:io.cilium.k8s.policy.serviceaccount)", 'default')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { node: string; namespace: string; label: string[]; annotation: string[]; serve?: string; port: string[]; serviceAccount: string }, cmd: Command) => {
      const p = await podAdd(labName(cmd), name, {
        node: o.node,
        namespace: o.namespace,
        serviceAccount: o.serviceAccount,
        labels: parseLabels(o.label),
        annotations: parseLabels(o.annotation),
        ports: parseNamedPorts(o.port),
        ...(o.serve !== undefined ? { serve: o.serve.split(',').map(Number) } : {}),
      });
      process.stdout.write(`pod ${p.namespace}/${p.name} on ${p.node}: ${p.ip}${p.serve ? `, serving on :${(p.serve.ports ?? [p.serve.port]).join(',')}` : ''}\n`);
    });
  pod
    .command('label')
    .description('change a running pod\'s labels (KEY=VALUE sets, KEY- removes); its identity and policies follow')
    .argument('<pod>', 'NAME or NAMESPACE/NAME')
    .argument('<changes...>')
    .option('--name <lab>', 'lab name')
    .action(async (ref: string, changes: string[], _o: unknown, cmd: Command) => {
      const p = await labPodLabel(labName(cmd), ref, parseLabelChanges(changes), warner());
      process.stdout.write(`pod ${p.namespace}/${p.name} labels: ${Object.entries(p.labels).map(([k, v]) => `${k}=${v}`).join(',') || '<none>'}\n`);
    });
  pod
    .command('set-ready')
    .description('Kubernetes mode: the pod\'s Ready condition, as its readiness probe would set it (the endpoint-slice controller follows)')
    .argument('<pod>', 'NAME or NAMESPACE/NAME')
    .argument('<ready>', 'true or false')
    .option('--name <lab>', 'lab name')
    .action(async (ref: string, ready: string, _o: unknown, cmd: Command) => {
      if (ready !== 'true' && ready !== 'false') throw new LabError('TENDRIL_ERR_LAB_INVALID', `set-ready takes true or false, not "${ready}"`);
      const p = await labPodSetReady(labName(cmd), ref, ready === 'true');
      process.stdout.write(`pod ${p.namespace}/${p.name}: Ready=${ready === 'true' ? 'True' : 'False'}\n`);
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

  const ns = lab.command('namespace').description('namespaces of the lab and their labels (what namespaceSelector matches)');
  ns.command('add')
    .argument('<namespace>')
    .option('--label <k=v>', 'namespace label (repeatable)', collect, [])
    .option('--annotation <k=v>', 'namespace annotation, e.g. ipam.tendril.io/ip-pool=blue (its pods\' pool; repeatable)', collect, [])
    .option('--name <lab>', 'lab name')
    .action(async (name: string, o: { label: string[]; annotation: string[] }, cmd: Command) => {
      const r = await labNamespaceSet(labName(cmd), name, parseLabels(o.label), 'add', warner(), parseLabels(o.annotation));
      process.stdout.write(`namespace ${r.name}: ${formatLabels(r.labels)}\n`);
    });
  ns.command('label')
    .description('KEY=VALUE sets, KEY- removes; pods of the namespace get new identities')
    .argument('<namespace>')
    .argument('<changes...>')
    .option('--name <lab>', 'lab name')
    .action(async (name: string, changes: string[], _o: unknown, cmd: Command) => {
      const r = await labNamespaceSet(labName(cmd), name, parseLabelChanges(changes), 'label', warner());
      process.stdout.write(`namespace ${r.name}: ${formatLabels(r.labels)}\n`);
    });
  ns.command('list')
    .option('--name <lab>', 'lab name')
    .action(async (_o: unknown, cmd: Command) => {
      const rows = await labNamespaceList(labName(cmd));
      process.stdout.write(table(['NAME', 'LABELS'], rows.map((r) => [r.name, formatLabels(r.labels)])));
    });

  const pol = lab.command('policy').description('cluster-wide network policies (every node enforces them)');
  pol
    .command('apply')
    .description('apply NetworkPolicy / TendrilNetworkPolicy documents from YAML or JSON files (all or nothing)')
    .argument('<files...>')
    .option('--name <lab>', 'lab name')
    .action(async (files: string[], _o: unknown, cmd: Command) => {
      const w = warner();
      const applied = await labPolicyApply(labName(cmd), files, w);
      const where = w.count() ? 'enforced on every node that runs' : 'enforced on every node';
      for (const a of applied) process.stdout.write(`policy ${a.key} applied (revision ${a.revision}); ${where}\n`);
    });
  pol
    .command('delete')
    .argument('<policy>', 'NAME, NAMESPACE/NAME or KIND.NAMESPACE.NAME')
    .option('--name <lab>', 'lab name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const w = warner();
      const deleted = await labPolicyDelete(labName(cmd), ref, w);
      process.stdout.write(`policy ${deleted} deleted; ${w.count() ? 'no node that runs' : 'no node'} enforces it any more\n`);
    });

  registerLabServices(lab, labName);
  registerLabLbPools(lab, labName);

  registerLabPools(lab, labName);

  const node = lab.command('node').description('nodes of the lab');
  node
    .command('add')
    .description('add a worker node (NODE, default the next wN) with its own agent')
    .argument('[node]')
    .option('--pod-cidr <cidr>', 'with --ipam kubernetes: the CIDR the node is given (repeatable)', collect, [])
    .option('--name <lab>', 'lab name')
    .action(async (nodeName: string | undefined, o: { podCidr: string[] }, cmd: Command) => {
      const n = await labNodeAdd(labName(cmd), { ...(nodeName ? { name: nodeName } : {}), ...(o.podCidr.length > 0 ? { podCidrs: o.podCidr } : {}) });
      outsideForNode(labName(cmd), n.name);
      process.stdout.write(`node ${n.name} ${n.ip}: pods ${n.podCidr}, agent pid ${n.pid} ready\n`);
    });
  node
    .command('pod-cidr')
    .description('with --ipam kubernetes: give a node other pod CIDRs (kube-controller-manager\'s part); its agent follows')
    .argument('<node>')
    .argument('<cidrs...>')
    .option('--name <lab>', 'lab name')
    .action(async (nodeName: string, cidrs: string[], _o: unknown, cmd: Command) => {
      await labNodePodCidrs(labName(cmd), nodeName, cidrs);
      process.stdout.write(`node ${nodeName}: pod CIDRs ${cidrs.join(', ')}\n`);
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

  registerLabOutside(lab);
  registerLabEgress(lab);
}
